//! Guardrails: limits no action may exceed, checked before each one. A refused action is
//! recorded with the reason and the planner's next step is tried.

use crate::action::{ActionSpec, ThrottleTarget};
use crate::observe::{Traffic, Window};
use crate::settings::Settings;
use crate::target::{ClientKey, Target};

/// What the checks need.
pub struct GuardContext<'a> {
    pub settings: &'a Settings,
    pub window: &'a Window,
    pub traffic: &'a dyn Traffic,
    /// Block rules applied in the last minute.
    pub blocks_last_minute: u32,
}

/// `Ok` with what was checked, or `Err` with why the action may not run.
pub fn check(spec: &ActionSpec, ctx: &GuardContext<'_>) -> Result<String, String> {
    let g = &ctx.settings.guardrails;
    match spec {
        ActionSpec::Block {
            target, offenders, ..
        } => {
            allowlisted(target, ctx)?;
            if ctx.blocks_last_minute >= g.max_blocks_per_minute {
                return Err(format!(
                    "{} block rules were applied in the last minute (max_blocks_per_minute {})",
                    ctx.blocks_last_minute, g.max_blocks_per_minute
                ));
            }
            let share = traffic_share(target, offenders, ctx)?;
            Ok(format!(
                "not allowlisted; {share}; {} of {} blocks in the last minute",
                ctx.blocks_last_minute, g.max_blocks_per_minute
            ))
        }
        ActionSpec::Throttle {
            target: target @ (ThrottleTarget::Client(_) | ThrottleTarget::Identity(_)),
            ..
        } => {
            let target = target
                .client_target()
                .ok_or("a client throttle names no client")?;
            allowlisted(&target, ctx)?;
            let offender = match &target {
                Target::Net(net) => net.as_address().map(ClientKey::from),
                Target::Identity(subject) => Some(ClientKey::Identity(subject.clone())),
                Target::Fingerprint(_) => None,
            };
            let share = traffic_share(&target, &Vec::from_iter(offender), ctx)?;
            Ok(format!("not allowlisted; {share}"))
        }
        ActionSpec::Throttle {
            target: ThrottleTarget::Route(_),
            rate_per_s,
            ..
        } => {
            if *rate_per_s < ctx.settings.throttle_min_rate {
                return Err(format!(
                    "a route throttle of {rate_per_s:.2}/s is under throttle_min_rate"
                ));
            }
            Ok("the route keeps at least throttle_min_rate".into())
        }
        ActionSpec::Circuit { .. } | ActionSpec::Rollback { .. } | ActionSpec::Hook { .. } => {
            Ok("no traffic guardrail applies".into())
        }
    }
}

/// The allowlist names addresses and prefixes: it protects identities and fingerprints only
/// through the traffic share and the canary.
fn allowlisted(target: &Target, ctx: &GuardContext<'_>) -> Result<(), String> {
    let Some(target) = target.as_net() else {
        return Ok(());
    };
    match ctx
        .settings
        .guardrails
        .allowlist
        .iter()
        .find(|allowed| allowed.overlaps(target))
    {
        Some(allowed) => Err(format!("{target} overlaps the allowlisted {allowed}")),
        None => Ok(()),
    }
}

/// The share of the window's requests the target covers besides the offenders' own.
fn traffic_share(
    target: &Target,
    offenders: &[ClientKey],
    ctx: &GuardContext<'_>,
) -> Result<String, String> {
    let covered = ctx.traffic.requests_from(target, offenders);
    let total = ctx.window.total_requests.max(1);
    let share = covered as f64 / total as f64;
    let max = ctx.settings.guardrails.max_traffic_share;
    if covered > 0 && share > max {
        return Err(format!(
            "{target} covers {covered} of {total} requests of the last window besides the offenders' ({:.0}%, max_traffic_share {:.0}%)",
            share * 100.0,
            max * 100.0
        ));
    }
    Ok(format!(
        "covers {covered} of {total} other requests ({:.0}%, max {:.0}%)",
        share * 100.0,
        max * 100.0
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(u64);

    impl Traffic for Fixed {
        fn requests_from(&self, _: &Target, _: &[ClientKey]) -> u64 {
            self.0
        }
        fn good_history(&self, _: &ClientKey, _: u64) -> Option<String> {
            None
        }
    }

    fn block(target: &str) -> ActionSpec {
        ActionSpec::Block {
            target: target.parse().unwrap(),
            ttl_ms: 1,
            canary_percent: None,
            offenders: vec![],
        }
    }

    #[test]
    fn allowlist_rate_and_share_refuse_with_reasons() {
        let mut settings = Settings::default();
        settings.guardrails.allowlist = vec!["10.0.0.0/8".parse().unwrap()];
        let window = Window {
            total_requests: 100,
            ..Window::default()
        };
        let quiet = Fixed(5);
        let ctx = GuardContext {
            settings: &settings,
            window: &window,
            traffic: &quiet,
            blocks_last_minute: 0,
        };
        assert!(check(&block("192.0.2.1"), &ctx).is_ok());
        let err = check(&block("10.1.2.3"), &ctx).unwrap_err();
        assert!(err.contains("allowlisted 10.0.0.0/8"), "{err}");
        let err = check(&block("0.0.0.0/0"), &ctx).unwrap_err();
        assert!(
            err.contains("allowlisted"),
            "a wider prefix covering the allowlist: {err}"
        );
        let busy = Fixed(50);
        let ctx = GuardContext {
            traffic: &busy,
            ..ctx
        };
        let err = check(&block("192.0.2.0/24"), &ctx).unwrap_err();
        assert!(err.contains("50 of 100"), "{err}");
        let ctx = GuardContext {
            traffic: &quiet,
            blocks_last_minute: 60,
            ..ctx
        };
        let err = check(&block("192.0.2.1"), &ctx).unwrap_err();
        assert!(err.contains("max_blocks_per_minute"), "{err}");
        let ctx = GuardContext {
            traffic: &busy,
            blocks_last_minute: 0,
            ..ctx
        };
        let err = check(&block("fingerprint:00000000000000ab"), &ctx).unwrap_err();
        assert!(
            err.contains("50 of 100"),
            "a fingerprint shared by others' traffic: {err}"
        );
    }

    #[test]
    fn an_identity_throttle_is_held_to_the_traffic_share_not_to_the_address_allowlist() {
        let mut settings = Settings::default();
        settings.guardrails.allowlist = vec!["127.0.0.0/8".parse().unwrap()];
        let window = Window {
            total_requests: 100,
            ..Window::default()
        };
        let throttle = |target| ActionSpec::Throttle {
            target,
            rate_per_s: 1.0,
            ttl_ms: 1,
        };
        let quiet = Fixed(0);
        let ctx = GuardContext {
            settings: &settings,
            window: &window,
            traffic: &quiet,
            blocks_last_minute: 0,
        };
        let mallory = throttle(ThrottleTarget::Identity("mallory".into()));
        assert!(check(&mallory, &ctx).is_ok());
        let err = check(
            &throttle(ThrottleTarget::Client("127.0.0.9".parse().unwrap())),
            &ctx,
        )
        .unwrap_err();
        assert!(err.contains("allowlisted"), "{err}");
        let busy = Fixed(50);
        let ctx = GuardContext {
            traffic: &busy,
            ..ctx
        };
        let err = check(&mallory, &ctx).unwrap_err();
        assert!(err.contains("identity:mallory covers 50 of 100"), "{err}");
    }
}
