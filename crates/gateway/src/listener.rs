//! Accepting client connections: the connection cap, TLS with ALPN, HTTP/1.1 and HTTP/2 on
//! the same port, the header read timeout, and graceful drain on shutdown.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use apiguard_model::ClientInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};

use prometheus::IntGauge;

use crate::metrics::Metrics;
use crate::proxy::{self, Connection, Shared};
use crate::snapshot::ListenerSettings;

/// hyper's HTTP/2 header list ceiling sits above any route's limit, so the pipeline's limits
/// stage answers (with problem+json and a security event). The HTTP/1.1 ceiling stays at
/// hyper's 100 headers: raising it makes hyper allocate and zero a larger index array for
/// every request head (measured: 6% of the proxy's CPU at 1,024).
const MAX_HEADER_LIST_BYTES: u32 = 256 * 1024;

/// Time allowed for a TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds a listening socket with a deep backlog and address reuse (fast restarts). It
/// registers with the runtime of the calling context.
pub fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(4096)
}

/// Signals shutdown to connections and lets the gateway wait until all have finished.
#[derive(Clone)]
pub struct Drain {
    pub shutdown: watch::Receiver<bool>,
    /// Each connection holds a clone; when every clone is gone, the drain is complete.
    pub alive: mpsc::Sender<()>,
}

/// The worker runtimes that serve connections, and how many each has open. One acceptor
/// hands every new connection to the worker with the fewest: SO_REUSEPORT's hash would
/// place wrk's 64 connections 36/28 or worse, and the fuller worker's queue then sets the p99,
/// while one socket polled by every worker lets the first one awake take a whole burst.
pub struct WorkerSet {
    handles: Vec<tokio::runtime::Handle>,
    /// Open connections per worker (`apiguard_worker_connections{worker}`).
    open: Vec<IntGauge>,
}

impl WorkerSet {
    pub fn new(handles: &[tokio::runtime::Handle], metrics: &Metrics) -> Arc<WorkerSet> {
        Arc::new(WorkerSet {
            handles: handles.to_vec(),
            open: (0..handles.len())
                .map(|i| {
                    metrics
                        .worker_connections
                        .with_label_values(&[&i.to_string()])
                })
                .collect(),
        })
    }

    /// The worker with the fewest open connections (the lowest index on a tie).
    fn least_loaded(&self) -> usize {
        (0..self.open.len())
            .min_by_key(|&i| self.open[i].get())
            .unwrap_or(0)
    }
}

/// Accepts connections until shutdown. With `workers`, each connection is served on the
/// least-loaded worker runtime; without, on the runtime running this loop.
pub async fn serve(
    listener: TcpListener,
    settings: Arc<ListenerSettings>,
    shared: Arc<Shared>,
    drain: Drain,
    workers: Option<Arc<WorkerSet>>,
) {
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let name: Arc<str> = settings.name.as_str().into();
    let open = shared
        .metrics
        .open_connections
        .with_label_values(&[&settings.name]);
    let rejected = shared
        .metrics
        .rejected_connections
        .with_label_values(&[&settings.name]);
    let mut shutdown = drain.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of file descriptors and the like: wait a moment instead of spinning.
                tracing::warn!(listener = %name, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            rejected.inc();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (shared, settings, drain, name, open) = (
            shared.clone(),
            settings.clone(),
            drain.clone(),
            name.clone(),
            open.clone(),
        );
        let Some(workers) = &workers else {
            tokio::spawn(async move {
                open.inc();
                serve_connection(stream, peer, &settings, shared, drain, name).await;
                open.dec();
                drop(permit);
            });
            continue;
        };
        // The socket leaves this runtime's reactor and joins the worker's.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%peer, %error, "cannot hand the connection to a worker");
                continue;
            }
        };
        let index = workers.least_loaded();
        workers.open[index].inc();
        let set = workers.clone();
        workers.handles[index].spawn(async move {
            if let Ok(stream) = TcpStream::from_std(stream) {
                open.inc();
                serve_connection(stream, peer, &settings, shared, drain, name).await;
                open.dec();
            }
            set.open[index].dec();
            drop(permit);
        });
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    settings: &ListenerSettings,
    shared: Arc<Shared>,
    drain: Drain,
    listener: Arc<str>,
) {
    // Settings are read from the current snapshot so that renewed certificates and changed
    // timeouts apply to new connections after a reload.
    let current = {
        let snapshot = shared.snapshot.load();
        snapshot
            .listeners
            .iter()
            .find(|l| l.address == settings.address)
            .cloned()
    };
    let settings: &ListenerSettings = current.as_deref().unwrap_or(settings);
    let tls = settings.tls.clone();
    let mut client = ClientInfo {
        peer,
        tls: tls.is_some(),
        client_cert_subject: None,
        client_cert_sans: Vec::new(),
    };
    // A client that connects and sends nothing would otherwise hold its slot for ever: the
    // header read timeout only starts once HTTP/1 bytes arrive.
    let mut first_byte = [0u8; 1];
    match tokio::time::timeout(settings.header_read_timeout, stream.peek(&mut first_byte)).await {
        Ok(Ok(n)) if n > 0 => {}
        _ => return,
    }
    match tls {
        None => {
            run_http(
                TokioIo::new(stream),
                client,
                settings,
                shared,
                drain,
                listener,
            )
            .await
        }
        Some(config) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let stream =
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            if let Some(certs) = stream.get_ref().1.peer_certificates()
                && let Some(leaf) = certs.first()
            {
                let identity = crate::identity::describe(leaf.as_ref());
                client.client_cert_subject = identity.subject;
                client.client_cert_sans = identity.sans;
            }
            run_http(
                TokioIo::new(stream),
                client,
                settings,
                shared,
                drain,
                listener,
            )
            .await
        }
    }
}

async fn run_http<I>(
    io: I,
    client: ClientInfo,
    settings: &ListenerSettings,
    shared: Arc<Shared>,
    drain: Drain,
    listener: Arc<str>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let connection = Arc::new(Connection {
        forwarding: crate::headers::ClientForwarding::new(client.peer, client.tls),
        client,
        listener,
    });
    let service = hyper::service::service_fn(move |request| {
        proxy::handle(shared.clone(), connection.clone(), request)
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.max_concurrent_streams)
        .max_header_list_size(MAX_HEADER_LIST_BYTES)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut shutdown = drain.shutdown.clone();
    let _alive = drain.alive;
    if *shutdown.borrow() {
        conn.as_mut().graceful_shutdown();
    }
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
        }
        _ = shutdown.changed() => {
            // Finish the requests in flight, refuse new ones, then close.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
