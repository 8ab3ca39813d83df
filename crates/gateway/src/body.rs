//! Bodies sent upstream: nothing, a buffered body, or the client's body streamed through a
//! byte counter that stops it at the route's limit.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::connpool::PooledBody;

/// The error a streamed body gives once it passes its limit.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than the route's limit of {limit} bytes")]
pub struct BodyTooLarge {
    pub limit: u64,
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Judges a streamed request body chunk by chunk before each chunk goes upstream (gRPC
/// message inspection, see protocols.rs). An error stops the body: the chunk that caused it
/// is not sent.
pub trait BodyGuard: Send {
    fn check(&mut self, chunk: &Bytes) -> Result<(), BoxError>;
    /// The body ended (after its last chunk).
    fn end(&mut self) -> Result<(), BoxError>;
}

/// When an upstream response body fails, the trailers to end it with instead, if any (a gRPC
/// status naming why the gateway stopped the request's stream).
pub type TrailersOnError = Box<dyn Fn() -> Option<HeaderMap> + Send + Sync>;

pin_project_lite::pin_project! {
    /// A request body on its way upstream.
    #[project = RequestBodyProj]
    pub enum RequestBody {
        Empty,
        Full { data: Option<Bytes>, trailers: Option<HeaderMap> },
        /// The client's body, after `prefix` (the part already read for inspection).
        Streaming { prefix: Option<Bytes>, #[pin] inner: Incoming, seen: u64, limit: u64 },
        /// The client's body, each chunk judged by `guard` before it is sent.
        Guarded { #[pin] inner: Incoming, guard: Box<dyn BodyGuard>, seen: u64, limit: u64 },
    }
}

impl RequestBody {
    /// A body read whole, with the client's trailers if it sent any.
    pub fn full(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        if data.is_empty() && trailers.is_none() {
            RequestBody::Empty
        } else {
            RequestBody::Full {
                data: (!data.is_empty()).then_some(data),
                trailers,
            }
        }
    }

    /// The client's body streamed through `guard`; more than `limit` bytes in all is an error
    /// ([`BodyTooLarge`]).
    pub fn guarded(inner: Incoming, guard: Box<dyn BodyGuard>, limit: u64) -> Self {
        RequestBody::Guarded {
            inner,
            guard,
            seen: 0,
            limit,
        }
    }

    /// The client's body streamed, after the `prefix` already read from it; more than `limit`
    /// bytes in all is an error ([`BodyTooLarge`]).
    pub fn streaming(prefix: Option<Bytes>, inner: Incoming, limit: u64) -> Self {
        RequestBody::Streaming {
            seen: prefix.as_ref().map_or(0, |p| p.len() as u64),
            prefix: prefix.filter(|p| !p.is_empty()),
            inner,
            limit,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            RequestBodyProj::Empty => Poll::Ready(None),
            RequestBodyProj::Full { data, trailers } => Poll::Ready(
                data.take()
                    .map(|d| Ok(Frame::data(d)))
                    .or_else(|| trailers.take().map(|t| Ok(Frame::trailers(t)))),
            ),
            RequestBodyProj::Streaming {
                prefix,
                inner,
                seen,
                limit,
            } => {
                if let Some(prefix) = prefix.take() {
                    if *seen > *limit {
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge { limit: *limit }))));
                    }
                    return Poll::Ready(Some(Ok(Frame::data(prefix))));
                }
                match std::task::ready!(inner.poll_frame(cx)) {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            *seen += data.len() as u64;
                            if *seen > *limit {
                                return Poll::Ready(Some(Err(Box::new(BodyTooLarge {
                                    limit: *limit,
                                }))));
                            }
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Some(Err(e)) => Poll::Ready(Some(Err(Box::new(e)))),
                    None => Poll::Ready(None),
                }
            }
            RequestBodyProj::Guarded {
                inner,
                guard,
                seen,
                limit,
            } => match std::task::ready!(inner.poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        *seen += data.len() as u64;
                        if *seen > *limit {
                            return Poll::Ready(Some(Err(Box::new(BodyTooLarge {
                                limit: *limit,
                            }))));
                        }
                        guard.check(data)?;
                    } else if frame.is_trailers() {
                        guard.end()?;
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Some(Err(e)) => Poll::Ready(Some(Err(Box::new(e)))),
                None => {
                    guard.end()?;
                    Poll::Ready(None)
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            // Not `inner.is_end_stream()`: the guard must see the end.
            RequestBody::Guarded { .. } => false,
            RequestBody::Full { data, trailers } => data.is_none() && trailers.is_none(),
            RequestBody::Streaming { prefix, inner, .. } => {
                prefix.is_none() && inner.is_end_stream()
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Full { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            RequestBody::Guarded { .. } => SizeHint::new(),
            RequestBody::Streaming { prefix, inner, .. } => {
                let before = prefix.as_ref().map_or(0, |p| p.len() as u64);
                let rest = inner.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + before);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + before);
                }
                hint
            }
        }
    }
}

/// The start of an upstream response body, read ahead (for OpenAPI validation, response
/// inspection) and sent before the rest.
#[derive(Default)]
pub struct ReadAhead {
    pub prefix: Option<Bytes>,
    pub trailers: Option<HeaderMap>,
    /// `prefix` is the whole body (the upstream's body has ended).
    pub complete: bool,
}

pin_project_lite::pin_project! {
    /// A response body to the client: the upstream's, streamed, or one made here. It counts
    /// the bytes sent so the access log can report them.
    #[project = ResponseBodyProj]
    pub enum ResponseBody {
        Local { data: Option<Bytes> },
        /// The upstream's body; `prefix` (and `trailers`) were read ahead for validation and
        /// are sent first (last).
        Upstream {
            prefix: Option<Bytes>,
            trailers: Option<HeaderMap>,
            #[pin] inner: PooledBody,
            on_end: Option<BytesSent>,
            // A failing upstream body ends with these trailers instead, when there are some.
            on_error: Option<TrailersOnError>,
        },
        /// A body read whole and rewritten (GraphQL responses, see protocols.rs), or its
        /// start followed by the rest of the original.
        Rewritten { data: Option<Bytes>, rest: Option<Box<ResponseBody>> },
    }
}

/// Counts the body bytes of a streamed response and reports them once, when the body ends or
/// is dropped (a client that goes away still gets its access log line).
pub struct BytesSent {
    sent: u64,
    done: Option<Box<dyn FnOnce(u64) + Send>>,
}

impl BytesSent {
    pub fn new(done: impl FnOnce(u64) + Send + 'static) -> Self {
        BytesSent {
            sent: 0,
            done: Some(Box::new(done)),
        }
    }
}

impl Drop for BytesSent {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            done(self.sent);
        }
    }
}

impl ResponseBody {
    pub fn local(data: impl Into<Bytes>) -> Self {
        ResponseBody::Local {
            data: Some(data.into()),
        }
    }

    pub fn empty() -> Self {
        ResponseBody::Local { data: None }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.project() {
            ResponseBodyProj::Local { data } => Poll::Ready(
                data.take()
                    .filter(|d| !d.is_empty())
                    .map(|d| Ok(Frame::data(d))),
            ),
            ResponseBodyProj::Rewritten { data, rest } => {
                if let Some(data) = data.take().filter(|d| !d.is_empty()) {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                match rest {
                    Some(rest) => Pin::new(rest.as_mut()).poll_frame(cx),
                    None => Poll::Ready(None),
                }
            }
            ResponseBodyProj::Upstream {
                prefix,
                trailers,
                inner,
                on_end,
                on_error,
            } => {
                if let Some(data) = prefix.take().filter(|d| !d.is_empty()) {
                    if let Some(counter) = on_end.as_mut() {
                        counter.sent += data.len() as u64;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                let polled = std::task::ready!(inner.poll_frame(cx));
                if matches!(polled, Some(Err(_)))
                    && let Some(trailers) = on_error.take().and_then(|make| make())
                {
                    drop(on_end.take());
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                match &polled {
                    Some(Ok(frame)) => {
                        if let (Some(data), Some(counter)) = (frame.data_ref(), on_end.as_mut()) {
                            counter.sent += data.len() as u64;
                        }
                    }
                    None => {
                        if let Some(trailers) = trailers.take() {
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                        drop(on_end.take())
                    }
                    Some(Err(_)) => drop(on_end.take()),
                }
                Poll::Ready(polled)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Local { data } => data.as_ref().is_none_or(|d| d.is_empty()),
            ResponseBody::Upstream {
                prefix,
                trailers,
                inner,
                ..
            } => prefix.is_none() && trailers.is_none() && inner.is_end_stream(),
            ResponseBody::Rewritten { data, rest } => {
                data.as_ref().is_none_or(|d| d.is_empty())
                    && rest.as_ref().is_none_or(|r| r.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Local { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ResponseBody::Upstream { prefix, inner, .. } => {
                let before = prefix.as_ref().map_or(0, |p| p.len() as u64);
                let rest = inner.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + before);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + before);
                }
                hint
            }
            ResponseBody::Rewritten { data, rest } => {
                let before = data.as_ref().map_or(0, |d| d.len() as u64);
                match rest {
                    None => SizeHint::with_exact(before),
                    Some(rest) => {
                        let rest = rest.size_hint();
                        let mut hint = SizeHint::new();
                        hint.set_lower(rest.lower() + before);
                        if let Some(upper) = rest.upper() {
                            hint.set_upper(upper + before);
                        }
                        hint
                    }
                }
            }
        }
    }
}
