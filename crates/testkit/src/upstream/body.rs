//! Response bodies the test upstream sends: small JSON, a generated stream of `n` bytes
//! that costs no memory whatever `n` is, and a body followed by trailers.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};

/// The body type of every response of the test upstream.
pub type UpstreamBody = BoxBody<Bytes, Infallible>;

/// Size of each data frame `/bytes/{n}` sends.
pub const CHUNK_SIZE: usize = 64 * 1024;

// Served by reference (`Bytes::from_static`), so streaming gigabytes allocates nothing.
static CHUNK: [u8; CHUNK_SIZE] = [b'a'; CHUNK_SIZE];

/// The data part of the `/trailers` response.
pub const TRAILERS_BODY: &str = "this body is followed by trailers\n";

/// Name of the trailer `/trailers` sends.
pub const CHECKSUM_TRAILER: &str = "x-checksum";

/// The value of the `x-checksum` trailer: FNV-1a 64 of [`TRAILERS_BODY`], 16 hex digits.
pub fn trailers_checksum() -> String {
    let hash = TRAILERS_BODY
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    format!("{hash:016x}")
}

pub(crate) fn empty() -> UpstreamBody {
    Empty::new().boxed()
}

pub(crate) fn json(value: &serde_json::Value) -> UpstreamBody {
    Full::new(Bytes::from(value.to_string())).boxed()
}

/// `len` bytes of `a`, generated on the fly. With `declare_length` the size is exact, so
/// hyper sends `content-length`; without it HTTP/1.1 uses chunked encoding.
pub(crate) fn repeated(len: u64, declare_length: bool) -> UpstreamBody {
    RepeatBody {
        remaining: len,
        declare_length,
    }
    .boxed()
}

/// [`TRAILERS_BODY`] then an `x-checksum` trailer.
pub(crate) fn with_trailers() -> UpstreamBody {
    let mut trailers = HeaderMap::new();
    let checksum = HeaderValue::from_str(&trailers_checksum()).expect("hex is a valid header");
    trailers.insert(CHECKSUM_TRAILER, checksum);
    let frames = [
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(TRAILERS_BODY.as_bytes()))),
        Ok(Frame::trailers(trailers)),
    ];
    StreamBody::new(futures_util::stream::iter(frames)).boxed()
}

struct RepeatBody {
    remaining: u64,
    declare_length: bool,
}

impl Body for RepeatBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let len = usize::try_from(self.remaining).map_or(CHUNK_SIZE, |left| left.min(CHUNK_SIZE));
        self.remaining -= len as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK[..len])))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        if self.declare_length {
            SizeHint::with_exact(self.remaining)
        } else {
            SizeHint::default()
        }
    }
}
