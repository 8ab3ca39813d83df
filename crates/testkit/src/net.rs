//! Network helpers: finding ports, waiting for a server to listen, and skipping tests
//! whose external service (RabbitMQ, PostgreSQL, Redis) is not running.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// A port that was free on 127.0.0.1 a moment ago. Another process may take it before
/// the caller binds it, so prefer binding `127.0.0.1:0` directly when the code under test
/// allows it; this is for configs and child processes that need a number up front.
pub fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("binding 127.0.0.1:0 works on any test machine")
}

/// Waits until a TCP connect to `addr` succeeds, trying every 20 ms.
///
/// # Errors
/// `TimedOut` (carrying the last connect error) if nothing listens within `timeout`.
pub async fn wait_for_port(addr: SocketAddr, timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let error = match tokio::net::TcpStream::connect(addr).await {
            Ok(_) => return Ok(()),
            Err(err) => err,
        };
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("nothing listened on {addr} within {timeout:?}: {error}"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether the external service `name` answers TCP at `addr`, for tests that need it.
/// Returns true when reachable. When not: panics if the environment variable `CI` is
/// `true` (CI must run every test), otherwise prints why to stderr and returns false so
/// the caller can return early.
///
/// ```no_run
/// if !apiguard_testkit::require_service("RabbitMQ", "127.0.0.1:5672") {
///     return;
/// }
/// ```
pub fn require_service(name: &str, addr: impl ToSocketAddrs) -> bool {
    let reason = match reachable(addr) {
        Ok(()) => return true,
        Err(reason) => reason,
    };
    if std::env::var("CI").is_ok_and(|ci| ci.eq_ignore_ascii_case("true")) {
        panic!("{name} is required in CI but is not reachable: {reason}");
    }
    eprintln!("skipping: {name} is not reachable ({reason}); start it to run this test");
    false
}

fn reachable(addr: impl ToSocketAddrs) -> Result<(), String> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve the address: {err}"))?
        .collect();
    let mut last_error = String::from("the address resolved to nothing");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(_) => return Ok(()),
            Err(err) => last_error = format!("{addr}: {err}"),
        }
    }
    Err(last_error)
}
