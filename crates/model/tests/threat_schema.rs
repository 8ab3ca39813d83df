//! The committed JSON Schemas of the canonical threat report and of a withdrawal must match
//! the Rust types. Regenerate them with
//! `APIGUARD_BLESS=1 cargo test -p apiguard-model --test threat_schema`.

use std::path::Path;

use apiguard_model::feed::Withdrawal;
use apiguard_model::threat::ThreatReport;

/// Compares `schema` with the committed file `schemas/<file>` (or writes it when blessing).
fn check_committed(schema: schemars::Schema, file: &str) {
    let generated = format!(
        "{}\n",
        serde_json::to_string_pretty(&schema).expect("a schema serialises")
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../schemas")
        .join(file);
    if std::env::var_os("APIGUARD_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("the schema file is writable");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    // Compared as JSON values: the order of object members depends on whether serde_json's
    // `preserve_order` is on in the build (a workspace build with cedar-policy turns it on).
    let as_value = |text: &str| serde_json::from_str::<serde_json::Value>(text).ok();
    assert!(
        as_value(&committed).is_some() && as_value(&committed) == as_value(&generated),
        "schemas/{file} is stale: run \
         `APIGUARD_BLESS=1 cargo test -p apiguard-model --test threat_schema`"
    );
}

#[test]
fn committed_threat_report_schema_matches_the_types() {
    check_committed(
        schemars::schema_for!(ThreatReport),
        "threat-report.schema.json",
    );
}

#[test]
fn committed_withdrawal_schema_matches_the_types() {
    check_committed(schemars::schema_for!(Withdrawal), "withdrawal.schema.json");
}
