//! The STIX 2.1 and TAXII 2.1 views against the OASIS tools: a hub publishes reports of
//! every indicator kind, then `standards.py` reads the whole collection with `taxii2-client`
//! and validates every object and the `/v1/stix` bundle with `stix2-validator`.
//!
//! The Python modules come from `.ci/run` (a venv under the target directory). Without them
//! the test fails under `CI=true` and is skipped with a reason otherwise. Another Python can
//! be named with `APIGUARD_STANDARDS_PYTHON`.

mod viewkit;

use std::path::PathBuf;
use std::process::Command;

/// The Python to use: `APIGUARD_STANDARDS_PYTHON`, else the venv `.ci/run` makes in the
/// target directory, else `python3`.
fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("APIGUARD_STANDARDS_PYTHON") {
        return PathBuf::from(python);
    }
    // target/debug/deps/standards-HASH → target
    let venv = std::env::current_exe().ok().and_then(|exe| {
        exe.ancestors()
            .nth(3)
            .map(|t| t.join("standards-venv/bin/python3"))
    });
    match venv {
        Some(venv) if venv.exists() => venv,
        _ => PathBuf::from("python3"),
    }
}

/// Whether the Python modules are there; fails loudly under CI when not.
fn require_python_modules(python: &PathBuf) -> bool {
    let probe = Command::new(python)
        .args(["-c", "import stix2validator, taxii2client, requests"])
        .output();
    let reason = match probe {
        Ok(out) if out.status.success() => return true,
        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        Err(e) => format!("cannot run {}: {e}", python.display()),
    };
    let message = format!(
        "the Python modules stix2-validator and taxii2-client are missing ({reason}); \
         .ci/run installs them"
    );
    if std::env::var("CI").is_ok_and(|ci| ci.eq_ignore_ascii_case("true")) {
        panic!("{message}");
    }
    eprintln!("skipping: {message}");
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taxii2_client_and_stix2_validator_accept_the_views() {
    let python = python();
    if !require_python_modules(&python) {
        return;
    }
    let setup = viewkit::start().await;
    let ids = viewkit::publish_all(&setup).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/standards.py");
    let base = setup.base.clone();
    let key = setup.beta_key.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .arg(&script)
            .args([&base, &key, &ids.join(",")])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    setup.hub.shutdown().await;
    assert!(
        out.status.success(),
        "standards.py failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("\"failures\": 0"), "{stdout}");
}
