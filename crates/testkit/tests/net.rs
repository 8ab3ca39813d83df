//! Port and service helpers.

use std::time::Duration;

use apiguard_testkit::{free_port, require_service, wait_for_port};
use tokio::net::TcpListener;

#[tokio::test]
async fn wait_for_port_sees_a_late_listener_and_times_out_on_none() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let late = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let listener = TcpListener::bind(addr).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(listener);
    });
    wait_for_port(addr, Duration::from_secs(5)).await.unwrap();
    late.abort();

    let unused = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let err = wait_for_port(unused, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
}

#[test]
fn require_service_reports_reachability() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    assert!(require_service(
        "test listener",
        listener.local_addr().unwrap()
    ));

    // With CI=true an unreachable service panics by design, so only check the skip path
    // outside CI.
    if std::env::var("CI").is_ok_and(|ci| ci.eq_ignore_ascii_case("true")) {
        return;
    }
    let unused = format!("127.0.0.1:{}", free_port());
    assert!(!require_service("nothing", unused.as_str()));
}
