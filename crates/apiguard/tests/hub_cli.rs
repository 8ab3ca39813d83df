//! `apiguard hub register` and `apiguard hub participants` as users run them: on the store a
//! hub configuration names, with no hub running, and while an (embedded) hub runs on it.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use apiguard_hub::{Hub, HubConfig};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const BIN: &str = env!("CARGO_BIN_EXE_apiguard");

fn hub(args: &[&str], config: &Path) -> Output {
    let mut command = Command::new(BIN);
    command
        .arg("hub")
        .args(&args[..1])
        .arg("--config")
        .arg(config);
    command.args(&args[1..]);
    command.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The API key a registration printed (the line that starts with `ahk_`).
fn printed_key(out: &Output) -> String {
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .find(|l| l.starts_with("ahk_"))
        .unwrap_or_else(|| panic!("no key printed: {}", text(&out.stdout)))
        .to_owned()
}

async fn call(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    method: &str,
    url: String,
    key: &str,
    body: &str,
) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, text(&body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_registered_from_the_command_line_can_report_and_receive() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hub.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\nstore: sqlite://{}\nsecret: cli-test-secret-0123456789abcdef0123\n\
             trust:\n  k: 1\n",
            dir.path().join("hub.db").display()
        ),
    )
    .unwrap();
    let pki = apiguard_testkit::TestPki::new();
    let pem = pki.write_pem_files().unwrap();

    // No hub running: registration writes the store and prints the key once.
    let out = hub(
        &[
            "register",
            "--name",
            "gw-alpha",
            "--organisation",
            "Alpha Org",
            "--own-network",
            "10.1.0.0/16",
        ],
        &config,
    );
    let alpha_key = printed_key(&out);
    assert!(text(&out.stdout).contains("registered participant `gw-alpha`"));
    let out = hub(
        &[
            "register",
            "--name",
            "gw-cert",
            "--organisation",
            "Cert Org",
            "--auth",
            "certificate",
            "--cert",
            pem.client_cert.to_str().unwrap(),
        ],
        &config,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("ahk_"), "{}", text(&out.stdout));

    // Mistakes are refused with the option and the reason.
    for (args, expected) in [
        (
            vec!["register", "--name", "gw-alpha", "--organisation", "Again"],
            "exists",
        ),
        (
            vec![
                "register",
                "--name",
                "x",
                "--organisation",
                "X",
                "--own-network",
                "nonsense",
            ],
            "--own-network nonsense",
        ),
        (
            vec![
                "register",
                "--name",
                "x",
                "--organisation",
                "X",
                "--cert",
                "/nonexistent.pem",
            ],
            "--cert /nonexistent.pem",
        ),
        (
            vec![
                "register",
                "--name",
                "x",
                "--organisation",
                "X",
                "--auth",
                "both",
            ],
            "needs a client certificate",
        ),
        (
            vec![
                "register",
                "--name",
                "gw-copy",
                "--organisation",
                "X",
                "--cert",
                pem.client_cert.to_str().unwrap(),
            ],
            "registered to another participant",
        ),
    ] {
        let out = hub(&args, &config);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            text(&out.stderr).contains(expected),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }

    let out = hub(&["participants"], &config);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    let rows: Vec<Vec<&str>> = listing
        .lines()
        .skip(1)
        .map(|l| l.split('\t').collect())
        .collect();
    assert_eq!(rows.len(), 2, "{listing}");
    assert_eq!(
        (rows[0][0], rows[0][2], rows[0][3]),
        ("gw-alpha", "api_key", "1")
    );
    assert_eq!(
        (rows[1][0], rows[1][2], rows[1][3]),
        ("gw-cert", "certificate", "0")
    );
    assert!(
        rows[1][4].starts_with("sha256:") && rows[1][4].len() == 71,
        "{listing}"
    );
    assert!(!listing.contains(&alpha_key));

    // A hub on that store accepts the printed key; a participant registered while it runs
    // works at once, and receives what others report.
    let settings = HubConfig::load(&config).unwrap().settings().unwrap();
    let running = Hub::start(settings).await.unwrap();
    let base = format!("http://{}", running.local_addr());
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let beta_key = printed_key(&hub(
        &[
            "register",
            "--name",
            "gw-beta",
            "--organisation",
            "Beta Org",
        ],
        &config,
    ));
    let (status, body) = call(&client, "GET", format!("{base}/v1/feed"), &beta_key, "").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        &client,
        "POST",
        format!("{base}/v1/reports"),
        &alpha_key,
        r#"{"attack": "sqli", "source_ip": "203.0.113.66"}"#,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = call(
            &client,
            "GET",
            format!("{base}/v1/feed?wait_ms=1000"),
            &beta_key,
            "",
        )
        .await;
        assert_eq!(status, 200);
        if body.contains("203.0.113.66") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gw-beta never received the report"
        );
    }
    let (status, _) = call(&client, "GET", format!("{base}/v1/feed"), "ahk_wrong", "").await;
    assert_eq!(status, 401);
    running.shutdown().await;
}

/// With RabbitMQ, a registration from the command line declares the participant's queue, so
/// a hub that was already running delivers to it without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_rabbitmq_a_command_line_registration_declares_the_queue() {
    if !apiguard_testkit::require_service("RabbitMQ", "127.0.0.1:5672") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hub.yaml");
    let prefix = format!("apiguard-test.cli.{}", std::process::id());
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\nstore: sqlite://{}\nsecret: cli-test-secret-0123456789abcdef0123\n\
             broker:\n  url: amqp://guest:guest@127.0.0.1:5672/%2f\n  prefix: {prefix}\n  timeout: 3s\n\
             trust:\n  k: 1\n",
            dir.path().join("hub.db").display()
        ),
    )
    .unwrap();
    let alpha_key = printed_key(&hub(
        &[
            "register",
            "--name",
            "gw-alpha",
            "--organisation",
            "Alpha Org",
        ],
        &config,
    ));
    let settings = HubConfig::load(&config).unwrap().settings().unwrap();
    let broker = settings.broker.clone().unwrap();
    let running = Hub::start(settings).await.unwrap();
    let base = format!("http://{}", running.local_addr());
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let out = hub(
        &[
            "register",
            "--name",
            "gw-beta",
            "--organisation",
            "Beta Org",
        ],
        &config,
    );
    assert!(
        !text(&out.stderr).contains("warning"),
        "{}",
        text(&out.stderr)
    );
    let beta_key = printed_key(&out);
    let (status, body) = call(
        &client,
        "POST",
        format!("{base}/v1/reports"),
        &alpha_key,
        r#"{"attack": "xss", "source_ip": "203.0.113.67"}"#,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let received = loop {
        let (status, body) = call(
            &client,
            "GET",
            format!("{base}/v1/feed?wait_ms=1000"),
            &beta_key,
            "",
        )
        .await;
        if status == 200 && body.contains("203.0.113.67") {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
    };
    running.shutdown().await;
    // Delete what the test declared, gw-beta's queue included.
    let bus = apiguard_hub::bus::RabbitBus::new(broker);
    for p in apiguard_hub::cli::participants(&config).await.unwrap() {
        bus.ensure_participant(&p.participant.id, &p.participant.subscription)
            .await
            .unwrap();
    }
    bus.delete_topology().await.unwrap();
    assert!(received, "gw-beta never received the report");
}
