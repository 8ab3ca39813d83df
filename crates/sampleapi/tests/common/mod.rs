//! Starts the sample API on ephemeral loopback ports for the tests in this directory.

use std::net::SocketAddr;

use apiguard_sampleapi::Store;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A running server; dropping it triggers graceful shutdown.
pub struct Running {
    pub addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

fn shutdown_signal() -> (
    oneshot::Sender<()>,
    impl Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

#[allow(dead_code)] // each test file uses one of the two
pub async fn start_http(store: Store) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, signal) = shutdown_signal();
    tokio::spawn(apiguard_sampleapi::serve_http_with_store(
        store, listener, signal,
    ));
    Running { addr, _stop: stop }
}

#[allow(dead_code)]
pub async fn start_grpc(store: Store) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, signal) = shutdown_signal();
    tokio::spawn(apiguard_sampleapi::serve_grpc_with_store(
        store, listener, signal,
    ));
    Running { addr, _stop: stop }
}
