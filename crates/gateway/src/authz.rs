//! Turns the `authz:` section into a validated Cedar policy set, each route's authorisation
//! stage, and the reputation source the stage reads (the block table and its watch list).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use apiguard_policy::authz::{
    AuthzMode, AuthzStage, Grants, Policies, Reputation, ReputationEntry, Source,
};

use crate::config::{AuthzModeConfig, Config, RouteConfig, Spanned};
use crate::enforcement::Enforcement;
use crate::load::Problem;

/// Largest policy or schema file read.
const MAX_POLICY_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// The compiled `authz:` section.
pub struct CompiledAuthz {
    pub policies: Arc<Policies>,
    pub mode: AuthzModeConfig,
    pub max_grant_ttl: Duration,
}

fn read(file: &Spanned<String>, problems: &mut Vec<Problem>) -> Option<String> {
    let path = &file.value;
    let result = std::fs::metadata(path).and_then(|m| {
        if m.len() > MAX_POLICY_FILE_BYTES {
            Err(std::io::Error::other(format!(
                "{} bytes; the limit is {MAX_POLICY_FILE_BYTES}",
                m.len()
            )))
        } else {
            std::fs::read_to_string(path)
        }
    });
    result
        .map_err(|e| {
            problems.push(Problem::at(
                file,
                format!("authz: cannot read `{path}`: {e}"),
            ))
        })
        .ok()
}

/// Reads and validates the policies; every problem names the policy or schema file and,
/// where Cedar gives one, the line and column in it.
pub fn compile_authz(config: &Config, problems: &mut Vec<Problem>) -> Option<CompiledAuthz> {
    let authz = config.authz.as_ref()?;
    if authz.policies.is_empty() {
        problems.push(Problem::general(
            "authz.policies needs at least one Cedar policy file",
        ));
        return None;
    }
    if authz.max_grant_ttl.0.is_zero() {
        problems.push(Problem::general(
            "authz.max_grant_ttl must be longer than 0",
        ));
    }
    let before = problems.len();
    let texts: Vec<Option<String>> = authz.policies.iter().map(|f| read(f, problems)).collect();
    let schema_text = authz.schema.as_ref().map(|f| (f, read(f, problems)));
    if problems.len() > before {
        return None;
    }
    let sources: Vec<Source<'_>> = authz
        .policies
        .iter()
        .zip(&texts)
        .map(|(file, text)| Source {
            file: &file.value,
            text: text.as_deref().unwrap_or(""),
        })
        .collect();
    let schema = schema_text.as_ref().map(|(file, text)| Source {
        file: &file.value,
        text: text.as_deref().unwrap_or(""),
    });
    match apiguard_policy::authz::compile(&sources, schema.as_ref()) {
        Ok(policies) => Some(CompiledAuthz {
            policies: Arc::new(policies),
            mode: authz.mode,
            max_grant_ttl: authz.max_grant_ttl.0,
        }),
        Err(errors) => {
            for error in errors {
                // Point at the file's entry in the configuration; the message carries the
                // position inside the policy or schema file.
                let entry = authz
                    .policies
                    .iter()
                    .chain(authz.schema.iter())
                    .find(|f| f.value == error.file);
                let message = format!("authz: {error}");
                problems.push(match entry {
                    Some(entry) => Problem::at(entry, message),
                    None => Problem::general(message),
                });
            }
            None
        }
    }
}

/// The route's authorisation stage, unless authorisation is off for it.
pub fn route_stage(
    compiled: Option<&CompiledAuthz>,
    route: &RouteConfig,
    grants: &Arc<Grants>,
    enforcement: &Arc<Enforcement>,
) -> Option<AuthzStage> {
    let compiled = compiled?;
    let mode = match route.authz.mode.unwrap_or(compiled.mode) {
        AuthzModeConfig::Enforce => AuthzMode::Enforce,
        AuthzModeConfig::Monitor => AuthzMode::Monitor,
        AuthzModeConfig::Off => return None,
    };
    Some(AuthzStage::new(
        &route.id.value,
        compiled.policies.clone(),
        grants.clone(),
        Arc::new(BlockTableReputation(enforcement.clone())),
        mode,
    ))
}

/// The block table as a reputation source: an address under a blocking rule or a watch
/// rule (a shared indicator in monitor mode) is listed.
pub struct BlockTableReputation(pub Arc<Enforcement>);

impl Reputation for BlockTableReputation {
    fn lookup(&self, ip: IpAddr) -> Option<ReputationEntry> {
        let rule = self.0.blocking(ip).or_else(|| self.0.watching(ip))?;
        Some(ReputationEntry {
            source: rule.source.clone(),
        })
    }
}
