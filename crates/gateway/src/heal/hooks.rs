//! External hooks: a webhook (HTTP POST of the event as JSON) or a command (argv, no shell,
//! the event JSON on standard input), each with a timeout. Calls run in the background; their
//! results come back to the heal task as notes for the audit trail.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;

use super::config::{Hook, HookTarget};

/// The result of one call, for the audit trail.
#[derive(Debug)]
pub struct HookResult {
    pub incident: u64,
    pub action: Option<u64>,
    pub text: String,
}

type HookClient = Client<HttpConnector, Full<Bytes>>;

/// Runs hooks in the background.
pub struct Hooks {
    client: HookClient,
    results: mpsc::Sender<HookResult>,
}

/// Most of a response body read from a webhook (it is only quoted in the audit trail).
const MAX_RESPONSE_BYTES: usize = 4096;

impl Hooks {
    pub fn new(results: mpsc::Sender<HookResult>) -> Hooks {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        Hooks {
            client: Client::builder(TokioExecutor::new()).build(connector),
            results,
        }
    }

    /// Calls every hook of `hooks` that follows `event`, with `payload`.
    pub fn call(
        &self,
        hooks: &[Hook],
        event: &str,
        payload: &serde_json::Value,
        incident: u64,
        action: Option<u64>,
    ) -> usize {
        let body = Bytes::from(payload.to_string());
        let mut called = 0;
        for hook in hooks
            .iter()
            .filter(|h| h.on.iter().any(|e| e.as_str() == event))
        {
            called += 1;
            let hook = hook.clone();
            let body = body.clone();
            let client = self.client.clone();
            let results = self.results.clone();
            let event = event.to_owned();
            tokio::spawn(async move {
                let outcome = match &hook.target {
                    HookTarget::Webhook { uri } => webhook(&client, uri, body, hook.timeout).await,
                    HookTarget::Command { argv } => {
                        let argv = argv.clone();
                        let timeout = hook.timeout;
                        tokio::task::spawn_blocking(move || command(&argv, &body, timeout))
                            .await
                            .unwrap_or_else(|e| Err(format!("the command task failed: {e}")))
                    }
                };
                let text = match outcome {
                    Ok(detail) => format!("hook `{}` ({event}) succeeded: {detail}", hook.name),
                    Err(error) => format!("hook `{}` ({event}) failed: {error}", hook.name),
                };
                tracing::info!(target: "apiguard::security", incident, "{text}");
                let _ = results
                    .send(HookResult {
                        incident,
                        action,
                        text,
                    })
                    .await;
            });
        }
        called
    }
}

async fn webhook(
    client: &HookClient,
    uri: &http::Uri,
    body: Bytes,
    timeout: Duration,
) -> Result<String, String> {
    let request = Request::builder()
        .method(Method::POST)
        .uri(uri.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, "apiguard-heal")
        .body(Full::new(body))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let call = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("POST {uri}: {e}"))?;
        let status = response.status();
        let body = http_body_util::Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let quoted: String = String::from_utf8_lossy(&body).chars().take(200).collect();
        if status.is_success() {
            Ok(format!("POST {uri}: {status}"))
        } else {
            Err(format!("POST {uri}: {status} {quoted}"))
        }
    };
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| Err(format!("POST {uri}: no answer within {timeout:?}")))
}

/// Runs `argv` with `input` on standard input; kills it after `timeout`.
fn command(argv: &[String], input: &[u8], timeout: Duration) -> Result<String, String> {
    let (program, args) = argv.split_first().ok_or("an empty command")?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A program that does not read its input is fine: a broken pipe is not an error.
        let _ = stdin.write_all(input);
    }
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(format!("`{program}` exited 0")),
            Ok(Some(status)) => return Err(format!("`{program}` exited with {status}")),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("`{program}` ran past {timeout:?} and was killed"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for `{program}`: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_get_their_input_and_are_killed_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("event.json");
        let argv = vec!["tee".to_owned(), out.display().to_string()];
        command(&argv, b"{\"event\":\"opened\"}", Duration::from_secs(5)).unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "{\"event\":\"opened\"}"
        );
        let err = command(&["false".to_owned()], b"", Duration::from_secs(5)).unwrap_err();
        assert!(err.contains("exited"), "{err}");
        let err = command(
            &["sleep".to_owned(), "5".to_owned()],
            b"",
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(err.contains("killed"), "{err}");
        let err = command(
            &["/nonexistent/program".to_owned()],
            b"",
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(err.contains("cannot run"), "{err}");
    }
}
