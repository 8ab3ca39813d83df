//! The `apiguard` binary as users run it: validate's messages, help, and a running gateway
//! process receiving SIGHUP and SIGTERM, streaming a 1 GB upload with bounded memory.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use apiguard_testkit::{TestUpstream, free_port, rss_kib};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const BIN: &str = env!("CARGO_BIN_EXE_apiguard");

fn validate(yaml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "FILE");
    (out.status.success(), text)
}

#[test]
fn validate_reports_every_semantic_problem_with_its_position() {
    let (ok, errors) = validate(
        "listeners:\n  - address: 127.0.0.1:80800\nupstreams:\n  backend:\n    targets: [\"nohost\"]\nroutes:\n  - id: r1\n    upstream: nowhere\n  - id: r1\n    upstream: backend\n    match: {path: {prefix: api}}\n",
    );
    assert!(!ok);
    let lines: Vec<&str> = errors.lines().collect();
    assert!(lines.contains(&"FILE:2:14: `127.0.0.1:80800` is not a valid IP:port address (such as 127.0.0.1:8080 or [::1]:8080)"), "{errors}");
    assert!(
        lines.iter().any(|l| l
            .starts_with("FILE:8:15: route `r1` names upstream `nowhere`, which is not defined")),
        "{errors}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("FILE:9:9: route id `r1` is used twice")),
        "{errors}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l
                .starts_with("FILE:5:15: upstream `backend`: target `nohost` must be host:port")),
        "{errors}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("path `api` must start with `/`")),
        "{errors}"
    );
}

#[test]
fn validate_reports_unknown_keys_and_unreadable_certificates() {
    let (ok, errors) = validate(
        "listeners:\n  - address: 127.0.0.1:8080\n    tsl: {}\nupstreams: {}\nroutes: []\n",
    );
    assert!(!ok);
    assert!(
        errors.starts_with("FILE:3:5: unknown field `tsl`"),
        "{errors}"
    );
    let (ok, errors) = validate(
        "listeners:\n  - address: 127.0.0.1:8443\n    tls: {cert: /nonexistent/cert.pem, key: /nonexistent/key.pem}\nupstreams:\n  b: {targets: [\"127.0.0.1:9000\"]}\nroutes: [{id: r, upstream: b}]\n",
    );
    assert!(!ok);
    assert!(
        errors.contains("FILE:3:17: cannot read certificate file `/nonexistent/cert.pem`"),
        "{errors}"
    );
    assert!(
        errors.contains("FILE:3:45: cannot read private key `/nonexistent/key.pem`"),
        "{errors}"
    );
}

#[test]
fn validate_lists_every_structural_problem_in_one_run() {
    let (ok, errors) = validate(
        "listeners:\n  - adress: 127.0.0.1:8080\nroutes:\n  - id: r\n    upstream: app\n    limits: {max_body_bytes: lots, max_header_count: 10}\n    detect: {mode: loud}\n",
    );
    assert!(!ok);
    let lines: Vec<&str> = errors.lines().collect();
    for expected in [
        "FILE:1:1: missing field `upstreams`",
        "FILE:2:5: unknown field `adress` in `listeners[0]`",
        "FILE:2:5: missing field `address` in `listeners[0]`",
        "FILE:6:30: `routes[0].limits.max_body_bytes` must be of type integer",
        "FILE:7:20: `routes[0].detect.mode` must be one of",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(expected)),
            "no line starts with {expected:?} in:\n{errors}"
        );
    }
}

#[test]
fn the_example_configuration_is_valid_and_help_is_complete() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for example in [
        "examples/bench.yaml",
        "examples/gateway.yaml",
        "examples/gateway-policy.yaml",
    ] {
        // Paths in a configuration are relative to the working directory.
        let out = Command::new(BIN)
            .args(["validate", "--config"])
            .arg(root.join(example))
            .current_dir(&root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{example}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for sub in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["validate", "--help"],
        vec!["schema", "--help"],
        vec!["demo", "--help"],
    ] {
        let out = Command::new(BIN).args(&sub).output().unwrap();
        assert!(out.status.success(), "{sub:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage:"),
            "{sub:?}"
        );
    }
}

#[test]
fn the_committed_json_schema_matches_the_configuration_types() {
    let out = Command::new(BIN).arg("schema").output().unwrap();
    let committed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/config.schema.json"),
    )
    .unwrap();
    // Compared as JSON values: the order of object members depends on whether serde_json's
    // `preserve_order` is on in the build (cedar-policy turns it on), not on the types.
    let generated: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let committed: serde_json::Value = serde_json::from_str(&committed).unwrap();
    assert_eq!(
        generated, committed,
        "schemas/config.schema.json is stale: run `cargo run -- schema > schemas/config.schema.json`"
    );
}

/// A gateway process on free ports, its stdout (JSON logs) collected in the background.
struct GatewayProcess {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    config: std::path::PathBuf,
    _dir: tempfile::TempDir,
    logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl GatewayProcess {
    fn start(upstream: SocketAddr, extra: &str) -> Self {
        // Free ports are picked by binding to port 0 and letting go, so a test running beside
        // this one may take the same port first: the gateway then fails to bind and exits, and
        // a plain connect would reach the other test's server. Wait for this process's own
        // "listening" lines, and start again on other ports if it exited.
        for _ in 0..5 {
            if let Some(gateway) = Self::try_start(upstream, extra) {
                return gateway;
            }
        }
        panic!("the gateway did not start (five attempts on fresh ports)");
    }

    fn try_start(upstream: SocketAddr, extra: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("gw.yaml");
        let (port, admin_port) = (free_port(), free_port());
        std::fs::write(&config, process_config(port, admin_port, upstream, extra)).unwrap();
        let mut child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = logs.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
        let listening = |logs: &[String]| {
            let says = |what: &str, at: &SocketAddr| {
                logs.iter()
                    .any(|l| l.contains(what) && l.contains(&at.to_string()))
            };
            says("\"listening\"", &addr) && says("admin listening", &admin)
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !listening(&logs.lock().unwrap()) {
            if child.try_wait().unwrap().is_some() {
                return None;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not start listening"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(GatewayProcess {
            child,
            addr,
            admin,
            config,
            _dir: dir,
            logs,
        })
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn log_contains(&self, needle: &str) -> bool {
        self.logs.lock().unwrap().iter().any(|l| l.contains(needle))
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn process_config(port: u16, admin_port: u16, upstream: SocketAddr, extra: &str) -> String {
    format!(
        "listeners: [{{address: \"127.0.0.1:{port}\"}}]\nadmin: {{address: \"127.0.0.1:{admin_port}\"}}\nupstreams:\n  u: {{targets: [\"{upstream}\"]}}\nroutes:\n  - id: all\n    upstream: u\n    limits: {{max_body_bytes: 2000000000}}\nreload: {{watch: false}}\n{extra}"
    )
}

async fn get_status(url: &str) -> (StatusCode, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = client
        .request(Request::get(url).body(Full::default()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_sigterm_drains_then_exits() {
    let upstream = TestUpstream::start().await.unwrap();
    let mut gw = GatewayProcess::start(upstream.addr(), "");
    let (status, _) = get_status(&format!("http://{}/echo", gw.addr)).await;
    assert_eq!(status, StatusCode::OK);
    // The access line is written when the response body is done, which may be just after
    // the client has read it.
    let deadline = Instant::now() + Duration::from_secs(3);
    while !gw.log_contains("\"message\":\"access\"") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        gw.log_contains("\"message\":\"access\""),
        "JSON access logs are written"
    );

    // A bad file and SIGHUP: rejected, still serving.
    std::fs::write(&gw.config, "listeners: [}").unwrap();
    gw.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(gw.log_contains("configuration rejected"));
    assert_eq!(
        get_status(&format!("http://{}/echo", gw.addr)).await.0,
        StatusCode::OK
    );

    // A good file and SIGHUP: version 2.
    let port = gw.addr.port();
    std::fs::write(
        &gw.config,
        process_config(
            port,
            gw.admin.port(),
            upstream.addr(),
            "access_log: {enabled: false}",
        ),
    )
    .unwrap();
    gw.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, versions) = get_status(&format!("http://{}/config/versions", gw.admin)).await;
    assert!(
        versions.contains("\"current\":2") && versions.contains("\"trigger\":\"sighup\""),
        "{versions}"
    );

    // SIGTERM during a slow request: the request completes, then the process exits 0.
    let url = format!("http://{}/sleep/800", gw.addr);
    let slow = tokio::spawn(async move { get_status(&url).await.0 });
    tokio::time::sleep(Duration::from_millis(200)).await;
    gw.signal("TERM");
    assert_eq!(slow.await.unwrap(), StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = gw.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the process did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_gb_upload_streams_through_with_bounded_memory() {
    const TOTAL: u64 = 1 << 30;
    const CHUNK: usize = 256 * 1024;
    let upstream = TestUpstream::start().await.unwrap();
    let gw = GatewayProcess::start(upstream.addr(), "access_log: {enabled: false}");
    let pid = gw.child.id();
    let baseline = rss_kib(pid).unwrap();
    let chunk = Bytes::from(vec![b'a'; CHUNK]);
    let chunks = futures_util::stream::iter(
        (0..TOTAL / CHUNK as u64)
            .map(move |_| Ok::<_, std::io::Error>(http_body::Frame::data(chunk.clone()))),
    );
    let client = Client::builder(TokioExecutor::new()).build_http::<StreamBody<_>>();
    let request = Request::post(format!("http://{}/upload", gw.addr))
        .header("content-length", TOTAL.to_string())
        .body(StreamBody::new(chunks))
        .unwrap();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(baseline));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(rss) = rss_kib(pid) {
                    peak.fetch_max(rss, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let response = client.request(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    sampler.abort();
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        answer["received"],
        TOTAL,
        "{answer}: {:?}",
        gw.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("security"))
            .collect::<Vec<_>>()
    );
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("gateway RSS: baseline {baseline} KiB, peak {peak} KiB during a 1 GiB upload");
    assert!(
        peak < baseline + 64 * 1024,
        "RSS grew from {baseline} KiB to {peak} KiB: the body is being buffered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_the_sample_api_through_the_gateway() {
    let (port, admin_port, partner_port) = (free_port(), free_port(), free_port());
    let mut demo = Command::new(BIN)
        .args([
            "demo",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin",
            &format!("127.0.0.1:{admin_port}"),
            "--partner",
            &format!("127.0.0.1:{partner_port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let partner: SocketAddr = format!("127.0.0.1:{partner_port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err()
        || std::net::TcpStream::connect(partner).is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the demo did not start listening"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, body) = get_status(&format!("http://{addr}/api/users/1")).await;
    let (missing, problem) = get_status(&format!("http://{addr}/nowhere")).await;
    let (_, metrics) = get_status(&format!("http://127.0.0.1:{admin_port}/metrics")).await;
    // The network effect: an attack on the demo gateway, then the partner refuses us.
    let partner_url = format!("http://127.0.0.1:{partner_port}/api/users/1");
    let (partner_before, _) = get_status(&partner_url).await;
    let (attacked, _) = get_status(&format!("http://{addr}/api/users?id=1%27%20OR%201=1--")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut partner_after = partner_before;
    while partner_after != StatusCode::FORBIDDEN && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        partner_after = get_status(&partner_url).await.0;
    }
    let _ = demo.kill();
    let mut banner = String::new();
    std::io::Read::read_to_string(demo.stderr.as_mut().unwrap(), &mut banner).unwrap();
    let _ = demo.wait();
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("\"id\":1"), "{body}");
    assert_eq!(missing, StatusCode::NOT_FOUND);
    assert!(problem.contains("\"request_id\""), "{problem}");
    assert!(metrics.contains("apiguard_requests_total{decision=\"allow\",method=\"GET\",route=\"user-by-id\",status_class=\"2xx\"} 1"), "{metrics}");
    assert!(
        banner.contains(&format!("curl -i http://{addr}/api/users/1")),
        "the banner says what to try: {banner}"
    );
    assert_eq!(partner_before, StatusCode::OK);
    assert_eq!(attacked, StatusCode::FORBIDDEN);
    assert_eq!(
        partner_after,
        StatusCode::FORBIDDEN,
        "the partner gateway never applied the shared indicator"
    );
}

/// The acceptor hands each new connection to the worker with the fewest open ones, so ten
/// keep-alive clients end up five and five, whatever the kernel would have hashed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_spread_evenly_over_the_workers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = TestUpstream::start().await.unwrap();
    let gw = GatewayProcess::start(upstream.addr(), "workers: 2\naccess_log: {enabled: false}");
    let mut clients = Vec::new();
    for _ in 0..10 {
        let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        stream
            .write_all(b"GET /echo HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .unwrap();
        // The answer proves that a worker serves the connection; it stays open (keep-alive).
        let mut buf = [0u8; 12];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        clients.push(stream);
    }
    let (_, metrics) = get_status(&format!("http://{}/metrics", gw.admin)).await;
    let open = |worker: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "apiguard_worker_connections{{worker=\"{worker}\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u32>().ok())
    };
    assert_eq!(
        (open("0"), open("1")),
        (Some(5), Some(5)),
        "connections per worker:\n{}",
        metrics
            .lines()
            .filter(|l| l.contains("worker_connections"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // A worker's count falls as its connections close.
    clients.truncate(4);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, metrics) = get_status(&format!("http://{}/metrics", gw.admin)).await;
        let total: u32 = metrics
            .lines()
            .filter(|l| l.starts_with("apiguard_worker_connections{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u32>().ok())
            .sum();
        if total == 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{total} connections still counted open, 4 are"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_worker_count_of_zero_is_refused() {
    let (ok, out) = validate(
        "listeners: [{address: \"127.0.0.1:8080\"}]\nupstreams: {u: {targets: [\"127.0.0.1:9\"]}}\nroutes: [{id: a, upstream: u}]\nworkers: 0\n",
    );
    assert!(!ok);
    assert!(out.contains("workers: 0"), "{out}");
}
