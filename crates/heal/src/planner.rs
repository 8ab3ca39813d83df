//! The remediation planner: maps a symptom to an ordered list of actions, the least
//! disruptive first. The engine tries them in order; a refused, failed or unverified step
//! hands over to the next, and an empty list escalates.

use crate::action::{ActionSpec, CircuitKey, ThrottleTarget};
use crate::observe::Window;
use crate::settings::Settings;
use crate::symptom::Symptom;
use crate::target::{ClientKey, Target};

/// What planning needs besides the symptom.
pub struct PlanContext<'a> {
    pub settings: &'a Settings,
    pub window: &'a Window,
    /// The learned failure threshold (a fallback failing as much is no way out).
    pub error_ratio: f64,
    /// The last known good configuration version, and the one in effect.
    pub known_good: Option<u64>,
    pub current_version: u64,
    /// The TTL the next block on a target gets (it grows for repeat offenders).
    pub block_ttl: &'a dyn Fn(&Target) -> u64,
    /// Whether a new block on a target starts as a canary.
    pub canary: &'a dyn Fn(&Target) -> bool,
}

impl PlanContext<'_> {
    /// The pool's fallback, when it has one that can take traffic.
    fn usable_fallback(&self, pool: &str) -> Option<String> {
        let fallback = self.window.pools.get(pool)?.fallback.clone()?;
        let state = self.window.pools.get(&fallback)?;
        let healthy = state.available > 0
            && (state.attempts < self.settings.min_requests
                || state.failure_ratio() < self.error_ratio);
        healthy.then_some(fallback)
    }

    fn block(&self, target: Target, offenders: Vec<ClientKey>) -> ActionSpec {
        let canary = (self.settings.canary.enabled && (self.canary)(&target))
            .then_some(self.settings.canary.share_percent);
        ActionSpec::Block {
            ttl_ms: (self.block_ttl)(&target),
            target,
            canary_percent: canary,
            offenders,
        }
    }
}

/// The actions to try for `symptom`, in order.
pub fn plan(symptom: &Symptom, ctx: &PlanContext<'_>) -> Vec<ActionSpec> {
    let s = ctx.settings;
    let mut steps = Vec::new();
    match symptom {
        Symptom::ConfigRegression { version, .. } => {
            if let Some(good) = ctx.known_good
                && good != ctx.current_version
            {
                steps.push(ActionSpec::Rollback {
                    from_version: (*version).max(ctx.current_version),
                    to_version: good,
                });
            }
        }
        Symptom::UpstreamFailing { pool, .. } => {
            let key = CircuitKey::Pool(pool.clone());
            if let Some(fallback) = ctx.usable_fallback(pool) {
                steps.push(ActionSpec::Circuit {
                    key: key.clone(),
                    open_ms: s.circuit_open_ms,
                    fallback: Some(fallback),
                });
            }
            steps.push(ActionSpec::Circuit {
                key,
                open_ms: s.circuit_open_ms,
                fallback: None,
            });
        }
        Symptom::RouteFailing { route, .. } => steps.push(ActionSpec::Circuit {
            key: CircuitKey::Route(route.clone()),
            open_ms: s.circuit_open_ms,
            fallback: None,
        }),
        Symptom::LatencyRegression { pool, .. } => {
            if let Some(fallback) = ctx.usable_fallback(pool) {
                steps.push(ActionSpec::Circuit {
                    key: CircuitKey::Pool(pool.clone()),
                    open_ms: s.circuit_open_ms,
                    fallback: Some(fallback),
                });
            }
        }
        // An authenticated offender is blocked by identity: its address may be a NAT or a
        // proxy that other clients share.
        Symptom::Attack { client, .. } => {
            steps.push(ctx.block(client.target(), vec![client.clone()]));
        }
        // An abusive client is slowed down before it is refused: by identity when it has
        // one (others may share its address), else by address.
        Symptom::Abuse { client, .. } => {
            let target = ThrottleTarget::of_client(client);
            steps.push(ActionSpec::Throttle {
                target: target.clone(),
                rate_per_s: s.throttle_rate,
                ttl_ms: s.throttle_ttl_ms,
            });
            let tighter = (s.throttle_rate / 4.0).max(s.throttle_min_rate);
            if tighter < s.throttle_rate {
                steps.push(ActionSpec::Throttle {
                    target,
                    rate_per_s: tighter,
                    ttl_ms: s.throttle_ttl_ms,
                });
            }
            steps.push(ctx.block(client.target(), vec![client.clone()]));
        }
        Symptom::DistributedAttack { prefix, offenders } => {
            let offenders = offenders.iter().map(|ip| ClientKey::from(*ip)).collect();
            steps.push(ctx.block(Target::Net(*prefix), offenders));
        }
        Symptom::SharedFingerprint {
            fingerprint,
            offenders,
        } => {
            steps.push(ctx.block(Target::Fingerprint(*fingerprint), offenders.clone()));
        }
        Symptom::RouteUnderAttack {
            route,
            requests,
            baseline_rate,
            ..
        } => {
            let seconds =
                (ctx.window.end_ms.saturating_sub(ctx.window.start_ms) as f64 / 1000.0).max(0.001);
            let rate = if *baseline_rate > 0.0 {
                baseline_rate * s.route_throttle_factor
            } else {
                *requests as f64 / seconds / 2.0
            };
            steps.push(ActionSpec::Throttle {
                target: ThrottleTarget::Route(route.clone()),
                rate_per_s: rate.max(s.throttle_min_rate),
                ttl_ms: s.throttle_ttl_ms,
            });
        }
    }
    if s.remediation_hook {
        steps.push(ActionSpec::Hook {
            reason: format!("{} on {}", symptom.kind(), symptom.subject()),
        });
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Net;
    use crate::observe::PoolWindow;

    fn window(fallback_available: usize) -> Window {
        let mut w = Window {
            start_ms: 0,
            end_ms: 1_000,
            ..Window::default()
        };
        w.pools.insert(
            "primary".into(),
            PoolWindow {
                attempts: 20,
                failures: 20,
                targets: 1,
                available: 1,
                fallback: Some("backup".into()),
            },
        );
        w.pools.insert(
            "backup".into(),
            PoolWindow {
                targets: 1,
                available: fallback_available,
                ..PoolWindow::default()
            },
        );
        w
    }

    fn ctx<'a>(settings: &'a Settings, window: &'a Window) -> PlanContext<'a> {
        PlanContext {
            settings,
            window,
            error_ratio: 0.5,
            known_good: Some(1),
            current_version: 2,
            block_ttl: &|_| 60_000,
            canary: &|target| !target.is_single_client(),
        }
    }

    #[test]
    fn a_failing_pool_reroutes_first_when_its_fallback_is_healthy() {
        let settings = Settings::default();
        let symptom = Symptom::UpstreamFailing {
            pool: "primary".into(),
            failure_ratio: 1.0,
            attempts: 20,
            routes: vec!["api".into()],
        };
        let w = window(1);
        let steps = plan(&symptom, &ctx(&settings, &w));
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].kind(), crate::action::ActionKind::Reroute);
        assert_eq!(steps[1].kind(), crate::action::ActionKind::CircuitBreak);
        let w = window(0);
        let steps = plan(&symptom, &ctx(&settings, &w));
        assert_eq!(steps.len(), 1, "no healthy fallback: only the circuit");
    }

    #[test]
    fn a_regression_rolls_back_to_the_known_good_version_and_hooks_come_last() {
        let settings = Settings {
            remediation_hook: true,
            ..Settings::default()
        };
        let symptom = Symptom::ConfigRegression {
            version: 2,
            changed_ms: 0,
            routes: vec!["api".into()],
            evidence: vec![],
        };
        let w = window(1);
        let steps = plan(&symptom, &ctx(&settings, &w));
        assert_eq!(
            steps[0],
            ActionSpec::Rollback {
                from_version: 2,
                to_version: 1
            }
        );
        assert!(matches!(steps[1], ActionSpec::Hook { .. }));
        let mut c = ctx(&settings, &w);
        c.known_good = None;
        assert_eq!(
            plan(&symptom, &c).len(),
            1,
            "without a known good version only the hook"
        );
    }

    #[test]
    fn prefixes_are_canaried_and_abuse_escalates_from_throttle_to_block() {
        let settings = Settings::default();
        let w = window(1);
        let prefix: Net = "127.0.0.0/24".parse().unwrap();
        let steps = plan(
            &Symptom::DistributedAttack {
                prefix,
                offenders: vec!["127.0.0.1".parse().unwrap()],
            },
            &ctx(&settings, &w),
        );
        assert!(matches!(
            steps[0],
            ActionSpec::Block {
                canary_percent: Some(50),
                ..
            }
        ));
        let steps = plan(
            &Symptom::Abuse {
                client: "10.0.0.1".parse().unwrap(),
                refusals: 50,
            },
            &ctx(&settings, &w),
        );
        let kinds: Vec<_> = steps.iter().map(|s| s.kind().as_str()).collect();
        assert_eq!(kinds, ["throttle", "throttle", "block"]);
    }

    #[test]
    fn an_abusive_identity_is_throttled_then_blocked_by_identity_never_by_address() {
        let settings = Settings::default();
        let w = window(1);
        let mallory = ClientKey::Identity("mallory".into());
        let steps = plan(
            &Symptom::Abuse {
                client: mallory.clone(),
                refusals: 50,
            },
            &ctx(&settings, &w),
        );
        let identity = ThrottleTarget::Identity("mallory".into());
        assert_eq!(
            steps,
            [
                ActionSpec::Throttle {
                    target: identity.clone(),
                    rate_per_s: settings.throttle_rate,
                    ttl_ms: settings.throttle_ttl_ms,
                },
                ActionSpec::Throttle {
                    target: identity,
                    rate_per_s: settings.throttle_rate / 4.0,
                    ttl_ms: settings.throttle_ttl_ms,
                },
                ActionSpec::Block {
                    target: Target::Identity("mallory".into()),
                    ttl_ms: 60_000,
                    canary_percent: None,
                    offenders: vec![mallory],
                },
            ],
            "the same escalation as an address, on the identity"
        );
    }

    #[test]
    fn an_authenticated_attacker_is_blocked_by_identity_and_a_shared_fingerprint_is_canaried() {
        let settings = Settings::default();
        let w = window(1);
        let steps = plan(
            &Symptom::Attack {
                client: ClientKey::Identity("mallory".into()),
                flagged: 9,
                evidence: vec![],
            },
            &ctx(&settings, &w),
        );
        assert_eq!(
            steps[0],
            ActionSpec::Block {
                target: Target::Identity("mallory".into()),
                ttl_ms: 60_000,
                canary_percent: None,
                offenders: vec![ClientKey::Identity("mallory".into())],
            },
            "the identity, not the address it shares with others"
        );
        let steps = plan(
            &Symptom::SharedFingerprint {
                fingerprint: 0xabc,
                offenders: vec![
                    "192.0.2.1".parse().unwrap(),
                    "198.51.100.2".parse().unwrap(),
                ],
            },
            &ctx(&settings, &w),
        );
        assert!(matches!(
            &steps[0],
            ActionSpec::Block {
                target: Target::Fingerprint(0xabc),
                canary_percent: Some(50),
                ..
            }
        ));
    }
}
