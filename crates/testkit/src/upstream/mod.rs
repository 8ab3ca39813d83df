//! [`TestUpstream`]: a real HTTP server on loopback (HTTP/1.1 and h2c on one port) that
//! records what it receives and answers predictably, for the gateway's integration tests.
//!
//! Routes (any method):
//! - `/echo`, `/echo/...`: 200 JSON `{method, path, query, headers: {name: [values]},
//!   body_len, version, upstream, peer}` (plus `trailers` when the request had some);
//! - `/healthz`: 200 `{"status": "ok"}`;
//! - `/status/{code}`: that status (200..=999), JSON body except for 204 and 304;
//! - `/sleep/{ms}`: waits, then 200;
//! - `/bytes/{n}`: `n` bytes streamed in 64 KiB chunks (`?chunked` drops content-length);
//! - `/upload`: reads the body streaming, answers `{"received": n}`;
//! - `/trailers`: [`TRAILERS_BODY`] then trailer `x-checksum: `[`trailers_checksum()`]
//!   (over HTTP/1.1 only when the request carries `te: trailers`);
//! - `/ws`: WebSocket echo (HTTP/1.1 upgrade).
//!
//! Every response carries `x-upstream: <name>`. [`UpstreamMode`] makes it fail and recover.
//! WebSocket sessions run detached from their connection once upgraded, so `Down` does not
//! cut them; shutting the runtime down does.

mod body;
mod handlers;
mod record;
mod websocket;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

pub use body::{CHECKSUM_TRAILER, CHUNK_SIZE, TRAILERS_BODY, UpstreamBody, trailers_checksum};
pub use record::RecordedRequest;

/// How the upstream behaves; switch with [`TestUpstream::set_mode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamMode {
    /// Answers every route as documented.
    Healthy,
    /// Accepts connections and answers 500 to every request, `/healthz` included.
    Failing,
    /// Closes its listening socket (connects are refused) and drops every open
    /// connection, like a crashed process. Coming back rebinds the same port.
    Down,
}

/// State shared by the accept loop and every request handler.
pub(crate) struct Shared {
    name: String,
    recorder: record::Recorder,
    mode: watch::Sender<UpstreamMode>,
}

impl Shared {
    fn mode(&self) -> UpstreamMode {
        *self.mode.borrow()
    }
}

/// Stops a [`TestUpstream`] from anywhere (cloneable; usable after the upstream moved).
#[derive(Clone)]
pub struct ShutdownHandle {
    signal: Arc<watch::Sender<bool>>,
}

impl ShutdownHandle {
    /// Closes the listener and drops every connection; returns at once.
    pub fn shutdown(&self) {
        self.signal.send_replace(true);
    }
}

/// A recording HTTP server on `127.0.0.1`. Dropping it shuts it down.
pub struct TestUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: ShutdownHandle,
    /// The mode the accept loop has actually applied, so `set_mode(Down)` can return only
    /// once connects are really refused.
    applied: watch::Receiver<UpstreamMode>,
    task: Option<JoinHandle<()>>,
}

impl TestUpstream {
    /// Starts on an ephemeral loopback port; `x-upstream` is its address.
    pub async fn start() -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let name = listener.local_addr()?.to_string();
        Self::serve(listener, name)
    }

    /// Starts on an ephemeral loopback port with `name` in `x-upstream` and echo bodies,
    /// so tests can tell pool members apart.
    pub async fn start_named(name: &str) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        Self::serve(listener, name.to_owned())
    }

    /// Starts on an already bound listener (e.g. a fixed port from a config file).
    pub fn serve(listener: TcpListener, name: String) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        let (mode, _) = watch::channel(UpstreamMode::Healthy);
        let shared = Arc::new(Shared {
            name,
            recorder: record::Recorder::default(),
            mode,
        });
        let (signal, stop) = watch::channel(false);
        let (applied_tx, applied) = watch::channel(UpstreamMode::Healthy);
        let task = tokio::spawn(accept_loop(
            listener,
            addr,
            Arc::clone(&shared),
            stop,
            applied_tx,
        ));
        Ok(Self {
            addr,
            shared,
            shutdown: ShutdownHandle {
                signal: Arc::new(signal),
            },
            applied,
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Requests received since start (or the last [`reset_counters`](Self::reset_counters)).
    pub fn request_count(&self) -> u64 {
        self.shared.recorder.requests()
    }

    /// Requests received whose path is exactly `path` (no query).
    pub fn request_count_for(&self, path: &str) -> u64 {
        self.shared.recorder.requests_for(path)
    }

    /// TCP connections accepted; shows whether a client reuses connections.
    pub fn connection_count(&self) -> u64 {
        self.shared.recorder.connections()
    }

    /// The most recent requests (up to 1024), oldest first.
    pub fn recorded_requests(&self) -> Vec<RecordedRequest> {
        self.shared.recorder.recent()
    }

    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.shared.recorder.recent().pop()
    }

    pub fn reset_counters(&self) {
        self.shared.recorder.reset();
    }

    pub fn mode(&self) -> UpstreamMode {
        self.shared.mode()
    }

    /// Switches behaviour and returns once it is in effect: after `set_mode(Down)` connects
    /// are refused; after `set_mode(Healthy)` from `Down` the port accepts again.
    ///
    /// # Panics
    /// If the server task died (e.g. the port could not be bound again within 5 s).
    pub async fn set_mode(&self, mode: UpstreamMode) {
        self.shared.mode.send_replace(mode);
        let mut applied = self.applied.clone();
        applied
            .wait_for(|applied| *applied == mode)
            .await
            .expect("the test upstream's server task stopped");
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Stops the server and waits until its socket is closed.
    pub async fn shutdown(mut self) {
        self.shutdown.shutdown();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.shutdown.shutdown();
    }
}

async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    applied: watch::Sender<UpstreamMode>,
) {
    let mut mode_changes = shared.mode.subscribe();
    let mut listener = Some(listener);
    // Connection tasks live here so that going down or shutting down can drop them all.
    let mut connections = JoinSet::new();
    loop {
        let mode = *mode_changes.borrow_and_update();
        if mode == UpstreamMode::Down {
            listener = None;
            connections.abort_all();
        } else if listener.is_none() {
            match rebind(addr).await {
                Ok(rebound) => listener = Some(rebound),
                Err(_) => return, // set_mode's wait reports it
            }
        }
        applied.send_replace(mode);

        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => break,
            changed = mode_changes.changed() => if changed.is_err() { break },
            accepted = accept(listener.as_ref()) => {
                if let Ok((stream, peer)) = accepted {
                    shared.recorder.connection_accepted();
                    connections.spawn(serve_connection(stream, peer, Arc::clone(&shared)));
                }
            }
            // Reap finished connections so the set does not grow with every one.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.abort_all();
}

/// Waits forever when there is no listener (the `Down` mode), so `select!` only wakes
/// for a mode change or shutdown.
async fn accept(listener: Option<&TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Binds `addr` again after `Down`. Retried briefly because the old socket may take a
/// moment to be released.
async fn rebind(addr: SocketAddr) -> io::Result<TcpListener> {
    let mut last_error = None;
    for _ in 0..50 {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(err) => last_error = Some(err),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("rebind failed")))
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |request| handlers::handle(request, Arc::clone(&shared), peer));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Larger HTTP/2 windows than the 64 KiB default, so big bodies are not throttled by
    // flow control more than a real upstream would.
    builder
        .http2()
        .initial_stream_window_size(4 * 1024 * 1024)
        .initial_connection_window_size(8 * 1024 * 1024);
    // Errors here are the client's doing (reset, garbage); the test will see them on its side.
    let _ = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .await;
}
