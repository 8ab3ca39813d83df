//! HTTP/1.1 connections to upstream targets, pooled per worker thread and per target.
//!
//! The generic client (hyper-util's) keeps one pool behind a lock and a hash map, boxes its
//! futures and races connects against checkouts. Here a request takes an idle connection of
//! its own worker thread for its target (an uncontended lock and a `Vec` pop), and the
//! response body hands it back the moment the upstream's response is complete. HTTP/2
//! upstreams (h2c) multiplex and keep using the generic client.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::RequestBody;

/// Why an attempt produced no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connecting to the target failed: {0}")]
    Connect(#[source] io::Error),
    #[error("connecting to the target took longer than the connect timeout")]
    ConnectTimeout,
    #[error(transparent)]
    Http(#[from] hyper::Error),
    /// From the generic client (HTTP/2 upstreams).
    #[error(transparent)]
    Client(#[from] hyper_util::client::legacy::Error),
}

impl SendError {
    /// Whether the request never reached the target (so another target may be tried).
    pub fn is_connect(&self) -> bool {
        match self {
            SendError::Connect(_) | SendError::ConnectTimeout => true,
            SendError::Client(e) => e.is_connect(),
            SendError::Http(_) => false,
        }
    }
}

/// Idle connections of one worker thread to one target.
#[derive(Default)]
struct Slot {
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    sender: SendRequest<RequestBody>,
    since: Instant,
}

/// Settings shared by every slot.
struct Limits {
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
}

/// The connections of one pool: a slot per (worker, target).
pub struct ConnPool {
    slots: Arc<[Slot]>,
    targets: usize,
    limits: Arc<Limits>,
}

impl ConnPool {
    pub fn new(
        workers: usize,
        targets: usize,
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> Self {
        let slots = (0..workers.max(1) * targets.max(1))
            .map(|_| Slot::default())
            .collect();
        ConnPool {
            slots,
            targets: targets.max(1),
            limits: Arc::new(Limits {
                connect_timeout,
                idle_timeout,
                max_idle,
            }),
        }
    }

    /// Sends `request` to target number `target` at `address`, on an idle connection of this
    /// worker thread or a new one. The response's body must be wrapped in the returned
    /// [`Lease`] so the connection comes back when the body ends.
    pub async fn send(
        &self,
        target: usize,
        address: &str,
        mut request: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        let workers = self.slots.len() / self.targets;
        let index = (crate::worker::current() % workers) * self.targets + target % self.targets;
        // A pooled connection the target closed while idle fails before the request is
        // written; the request then comes back and goes out on the next connection.
        while let Some(mut sender) = self.checkout(index).await {
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, self.lease(index, sender))),
                Err(mut failed) => match failed.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(SendError::Http(failed.into_error())),
                },
            }
        }
        let mut sender = self.connect(address).await?;
        let response = sender.send_request(request).await?;
        Ok((response, self.lease(index, sender)))
    }

    fn lease(&self, index: usize, sender: SendRequest<RequestBody>) -> Lease {
        Lease {
            sender: Some(sender),
            slots: self.slots.clone(),
            index,
            limits: self.limits.clone(),
        }
    }

    /// An idle connection that can take a request now, dropping dead and stale ones.
    async fn checkout(&self, index: usize) -> Option<SendRequest<RequestBody>> {
        loop {
            let idle = self.slots[index]
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop()?;
            let mut sender = idle.sender;
            if sender.is_closed() || idle.since.elapsed() > self.limits.idle_timeout {
                continue;
            }
            if sender.is_ready() {
                return Some(sender);
            }
            // Handed back as its response ended; the connection task may not have seen the
            // end yet. It is ready (or closed) as soon as it runs.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    async fn connect(&self, address: &str) -> Result<SendRequest<RequestBody>, SendError> {
        let stream = tokio::time::timeout(self.limits.connect_timeout, TcpStream::connect(address))
            .await
            .map_err(|_| SendError::ConnectTimeout)?
            .map_err(SendError::Connect)?;
        stream.set_nodelay(true).map_err(SendError::Connect)?;
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// A connection lent to one exchange. Released when the response body has ended, it goes
/// back to its slot; dropped earlier (the client went away mid-body, an upgrade), it closes.
pub struct Lease {
    sender: Option<SendRequest<RequestBody>>,
    slots: Arc<[Slot]>,
    index: usize,
    limits: Arc<Limits>,
}

impl Lease {
    /// The exchange is complete: the connection may serve another request.
    pub fn release(mut self) {
        let Some(sender) = self.sender.take() else {
            return;
        };
        if sender.is_closed() {
            return;
        }
        let mut idle = self.slots[self.index]
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.limits.max_idle {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// The connection will not be reused (it was upgraded, or the exchange failed).
    pub fn discard(mut self) {
        self.sender.take();
    }
}

pin_project_lite::pin_project! {
    /// An upstream response body; one from a pooled HTTP/1 connection returns the connection
    /// when it ends.
    pub struct PooledBody {
        #[pin]
        inner: Incoming,
        lease: Option<Lease>,
    }
}

impl PooledBody {
    /// A body from a connection this pool does not manage (HTTP/2).
    pub fn unpooled(inner: Incoming) -> Self {
        PooledBody { inner, lease: None }
    }

    pub fn new(inner: Incoming, lease: Lease) -> Self {
        let mut body = PooledBody {
            inner,
            lease: Some(lease),
        };
        // A bodiless response (HEAD, 204, 304, Content-Length: 0) may never be polled.
        if body.inner.is_end_stream()
            && let Some(lease) = body.lease.take()
        {
            lease.release();
        }
        body
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut this = self.project();
        let frame = std::task::ready!(this.inner.as_mut().poll_frame(cx));
        match &frame {
            // The last byte is in: release now rather than when the client asks for more.
            Some(Ok(_)) if this.inner.is_end_stream() => {
                if let Some(lease) = this.lease.take() {
                    lease.release();
                }
            }
            None => {
                if let Some(lease) = this.lease.take() {
                    lease.release();
                }
            }
            Some(Err(_)) => {
                this.lease.take();
            }
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
