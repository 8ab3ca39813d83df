//! The committed JSON Schema of the canonical threat report must match the Rust types.
//! Regenerate it with `APIGUARD_BLESS=1 cargo test -p apiguard-model --test threat_schema`.

use std::path::Path;

use apiguard_model::threat::ThreatReport;

#[test]
fn committed_threat_report_schema_matches_the_types() {
    let schema = schemars::schema_for!(ThreatReport);
    let generated = format!(
        "{}\n",
        serde_json::to_string_pretty(&schema).expect("a schema serialises")
    );
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/threat-report.schema.json");
    if std::env::var_os("APIGUARD_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("the schema file is writable");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "schemas/threat-report.schema.json is stale: run \
         `APIGUARD_BLESS=1 cargo test -p apiguard-model --test threat_schema`"
    );
}

#[test]
fn committed_withdrawal_schema_matches_the_types() {
    let schema = schemars::schema_for!(apiguard_model::feed::Withdrawal);
    let generated = format!(
        "{}\n",
        serde_json::to_string_pretty(&schema).expect("a schema serialises")
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/withdrawal.schema.json");
    if std::env::var_os("APIGUARD_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("the schema file is writable");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "schemas/withdrawal.schema.json is stale: run \
         `APIGUARD_BLESS=1 cargo test -p apiguard-model --test threat_schema`"
    );
}
