//! The engine driven through whole episodes with hand-built windows: every incident follows
//! the state machine, actions are verified, escalated, reverted and learned from.

use std::collections::BTreeMap;
use std::net::IpAddr;

use apiguard_heal::{
    ActionKind, ActionSpec, ActionState, CircuitKey, CircuitPhase, ClientKey, ClientWindow,
    Command, ConfigChange, Healer, Mode, PoolWindow, RouteWindow, Settings, State, Target, Traffic,
    Window,
};

const SECOND: u64 = 1_000;

fn settings() -> Settings {
    Settings {
        mode: Mode::Enforce,
        stable_after_ms: 3 * SECOND,
        ..Settings::default()
    }
}

/// Traffic with a fixed set of clients with a good history.
#[derive(Default)]
struct Ledger {
    good: Vec<ClientKey>,
    requests: BTreeMap<ClientKey, u64>,
}

impl Traffic for Ledger {
    fn requests_from(&self, target: &Target, except: &[ClientKey]) -> u64 {
        self.requests
            .iter()
            .filter(|(client, _)| target.covers(client, &[], None) && !except.contains(client))
            .map(|(_, n)| n)
            .sum()
    }

    fn good_history(&self, client: &ClientKey, _: u64) -> Option<String> {
        self.good
            .contains(client)
            .then(|| format!("{client} had 50 clean requests"))
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A client by address (`192.0.2.1`) or identity (`identity:alice`).
fn key(s: &str) -> ClientKey {
    s.parse().unwrap()
}

/// A window `n` (one second each) with one route `api` on `primary`.
fn window(n: u64, requests: u64, errors: u64) -> Window {
    let mut w = Window {
        start_ms: n * SECOND,
        end_ms: (n + 1) * SECOND,
        config_version: 1,
        total_requests: requests,
        ..Window::default()
    };
    w.routes.insert(
        "api".into(),
        RouteWindow {
            pool: "primary".into(),
            requests,
            errors,
            latency_ms: Some(5.0),
            ..RouteWindow::default()
        },
    );
    w.pools.insert(
        "primary".into(),
        PoolWindow {
            attempts: requests,
            failures: errors,
            targets: 1,
            available: 1,
            fallback: Some("backup".into()),
        },
    );
    w.pools.insert(
        "backup".into(),
        PoolWindow {
            targets: 1,
            available: 1,
            ..PoolWindow::default()
        },
    );
    w
}

fn applies(commands: &[Command]) -> Vec<(u64, ActionSpec)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Apply { action, spec } => Some((*action, spec.clone())),
            _ => None,
        })
        .collect()
}

fn confirm_all(healer: &mut Healer, commands: &[Command], now: u64) {
    for (action, spec) in applies(commands) {
        let version = matches!(spec, ActionSpec::Rollback { .. }).then_some(3);
        healer.applied(action, Ok(version), now);
    }
}

#[test]
fn a_failing_upstream_is_rerouted_verified_and_its_circuit_closes_after_probes() {
    let mut healer = Healer::new(settings(), None);
    let traffic = Ledger::default();
    for n in 0..3 {
        assert!(applies(&healer.tick(&window(n, 20, 0), &traffic)).is_empty());
    }
    // Onset: every attempt fails.
    let commands = healer.tick(&window(3, 20, 20), &traffic);
    let applied = applies(&commands);
    assert_eq!(applied.len(), 1, "{commands:?}");
    assert_eq!(
        applied[0].1,
        ActionSpec::Circuit {
            key: CircuitKey::Pool("primary".into()),
            open_ms: settings().circuit_open_ms,
            fallback: Some("backup".into()),
        }
    );
    assert!(commands.contains(&Command::Notify {
        incident: 1,
        event: "opened"
    }));
    healer.applied(applied[0].0, Ok(None), 4 * SECOND);
    assert_eq!(healer.incident(1).unwrap().state, State::Verification);

    // Rerouted: the route's answers come from the fallback and succeed.
    let mut rerouted = window(4, 20, 0);
    rerouted.pools.get_mut("primary").unwrap().attempts = 0;
    rerouted.pools.get_mut("backup").unwrap().attempts = 20;
    let commands = healer.tick(&rerouted, &traffic);
    let incident = healer.incident(1).unwrap();
    assert_eq!(incident.state, State::Normal, "{:?}", incident.transitions);
    assert_eq!(incident.opened_ms, 3 * SECOND);
    assert_eq!(incident.mitigated_ms, Some(4 * SECOND));
    assert_eq!(incident.verified_ms, Some(5 * SECOND));
    let path: Vec<_> = incident.transitions.iter().map(|t| t.to.as_str()).collect();
    assert_eq!(
        path,
        [
            "degraded",
            "analysis",
            "remediation",
            "verification",
            "normal"
        ]
    );
    assert!(
        incident
            .transitions
            .iter()
            .all(|t| !t.reason.is_empty() && t.at_ms > 0)
    );
    assert!(commands.contains(&Command::Notify {
        incident: 1,
        event: "resolved"
    }));

    // The open period ends: half-open, then probes succeed and the circuit closes.
    let mut later = window(14, 20, 0);
    later.pools.get_mut("primary").unwrap().attempts = 0;
    let commands = healer.tick(&later, &traffic);
    assert!(
        commands.iter().any(|c| matches!(
            c,
            Command::SetCircuit {
                phase: CircuitPhase::HalfOpen { .. },
                ..
            }
        )),
        "{commands:?}"
    );
    let mut probing = window(15, 20, 0);
    probing.pools.get_mut("primary").unwrap().attempts = 4;
    let commands = healer.tick(&probing, &traffic);
    assert!(
        commands.iter().any(|c| matches!(c, Command::Revert { .. })),
        "{commands:?}"
    );
    assert_eq!(healer.actions()[0].state, ActionState::Ended);
}

#[test]
fn failed_probes_reopen_the_circuit_for_longer() {
    let mut s = settings();
    s.circuit_open_ms = 2 * SECOND;
    let mut healer = Healer::new(s, None);
    let traffic = Ledger::default();
    let mut failing = window(0, 20, 20);
    failing.pools.get_mut("backup").unwrap().available = 0;
    let commands = healer.tick(&failing, &traffic);
    let applied = applies(&commands);
    assert_eq!(applied[0].1.kind(), ActionKind::CircuitBreak);
    healer.applied(applied[0].0, Ok(None), SECOND);
    let mut open = window(1, 20, 20);
    open.routes.get_mut("api").unwrap().circuit_rejected = 20;
    healer.tick(&open, &traffic);
    assert_eq!(
        healer.incident(1).unwrap().state,
        State::Normal,
        "contained"
    );
    healer.tick(&open_window(2), &traffic);
    let commands = healer.tick(&window(3, 4, 4), &traffic);
    let reopened = commands.iter().find_map(|c| match c {
        Command::SetCircuit {
            phase: CircuitPhase::Open { until_ms },
            ..
        } => Some(*until_ms),
        _ => None,
    });
    assert_eq!(reopened, Some(4 * SECOND + 4 * SECOND), "{commands:?}");
}

fn open_window(n: u64) -> Window {
    let mut w = window(n, 20, 20);
    w.routes.get_mut("api").unwrap().circuit_rejected = 20;
    w.pools.get_mut("primary").unwrap().attempts = 0;
    w.pools.get_mut("primary").unwrap().failures = 0;
    w
}

#[test]
fn a_bad_config_push_is_rolled_back_to_the_known_good_version() {
    let mut healer = Healer::new(settings(), None);
    let traffic = Ledger::default();
    let mut marked = Vec::new();
    for n in 0..5 {
        for c in healer.tick(&window(n, 20, 0), &traffic) {
            if let Command::MarkKnownGood { version } = c {
                marked.push(version);
            }
        }
    }
    assert_eq!(marked, [1], "version 1 became known good once");
    assert_eq!(healer.known_good(), Some(1));

    let mut bad = window(5, 20, 20);
    bad.config_version = 2;
    bad.config_changes = vec![ConfigChange {
        version: 2,
        at_ms: 5 * SECOND + 100,
    }];
    let commands = healer.tick(&bad, &traffic);
    let applied = applies(&commands);
    assert_eq!(
        applied.iter().map(|a| a.1.clone()).collect::<Vec<_>>(),
        [ActionSpec::Rollback {
            from_version: 2,
            to_version: 1
        }],
        "a regression after a change is rolled back, not circuit-broken"
    );
    let incident = &healer.incidents()[0];
    assert_eq!(incident.kind, "config_regression");
    assert!(
        incident.transitions[0]
            .evidence
            .iter()
            .any(|e| e.contains("100% errors")),
        "{:?}",
        incident.transitions[0].evidence
    );
    healer.applied(applied[0].0, Ok(Some(3)), 6 * SECOND);
    let mut after = window(6, 20, 0);
    after.config_version = 3;
    after.config_changes = vec![ConfigChange {
        version: 3,
        at_ms: 6 * SECOND,
    }];
    healer.tick(&after, &traffic);
    let incident = &healer.incidents()[0];
    assert_eq!(incident.state, State::Normal, "{:?}", incident.transitions);
    assert_eq!(
        healer.known_good(),
        Some(3),
        "the rollback's version runs good text"
    );
    // The rollback itself is never blamed.
    for n in 7..10 {
        let mut w = window(n, 20, 0);
        w.config_version = 3;
        assert!(applies(&healer.tick(&w, &traffic)).is_empty());
    }
}

#[test]
fn a_version_seen_before_its_event_is_never_marked_good_when_it_breaks_things() {
    let mut healer = Healer::new(settings(), None);
    let traffic = Ledger::default();
    for n in 0..5 {
        healer.tick(&window(n, 20, 0), &traffic);
    }
    assert_eq!(healer.known_good(), Some(1));
    // The reload finished during the tick: the snapshot says 2, the event comes later.
    let mut bad = window(5, 20, 20);
    bad.config_version = 2;
    let commands = healer.tick(&bad, &traffic);
    assert_eq!(
        applies(&commands)
            .iter()
            .map(|a| a.1.clone())
            .collect::<Vec<_>>(),
        [ActionSpec::Rollback {
            from_version: 2,
            to_version: 1
        }]
    );
    assert!(
        !commands
            .iter()
            .any(|c| matches!(c, Command::MarkKnownGood { version: 2 })),
        "{commands:?}"
    );
    assert_eq!(healer.known_good(), Some(1));
}

#[test]
fn without_a_known_good_version_a_regression_escalates_to_operators() {
    let mut s = settings();
    s.stable_after_ms = u64::MAX;
    let mut healer = Healer::new(s, None);
    let traffic = Ledger::default();
    healer.tick(&window(0, 20, 0), &traffic);
    let mut bad = window(1, 20, 20);
    bad.config_version = 2;
    bad.config_changes = vec![ConfigChange {
        version: 2,
        at_ms: SECOND,
    }];
    let commands = healer.tick(&bad, &traffic);
    assert!(applies(&commands).is_empty());
    assert!(commands.contains(&Command::Notify {
        incident: 1,
        event: "escalated"
    }));
    assert_eq!(healer.incident(1).unwrap().state, State::Escalated);
}

fn attack_window(n: u64, clients: &[(&str, u32)]) -> Window {
    let mut w = window(n, 100, 0);
    for (client, flagged) in clients {
        let mut c = ClientWindow {
            flagged: *flagged,
            refused: *flagged,
            ..ClientWindow::default()
        };
        c.note("sqli-942100 at query:id".into());
        w.clients.insert(key(client), c);
    }
    w
}

#[test]
fn an_attacker_is_blocked_in_the_window_it_attacks_and_repeat_offenders_get_longer_blocks() {
    let s = settings();
    let mut healer = Healer::new(s.clone(), None);
    let traffic = Ledger::default();
    let commands = healer.tick(&attack_window(0, &[("127.0.0.66", 8)]), &traffic);
    let applied = applies(&commands);
    assert_eq!(
        applied[0].1,
        ActionSpec::Block {
            target: "127.0.0.66".parse().unwrap(),
            ttl_ms: s.block_ttl_ms,
            canary_percent: None,
            offenders: vec![key("127.0.0.66")],
        },
        "an address without a good history is blocked outright"
    );
    confirm_all(&mut healer, &commands, SECOND);
    healer.tick(&window(1, 100, 0), &traffic);
    assert_eq!(healer.incident(1).unwrap().state, State::Normal);
    // The block expires; the same address attacks again.
    let later = s.block_ttl_ms / SECOND + 2;
    healer.tick(&window(later, 100, 0), &traffic);
    let commands = healer.tick(&attack_window(later + 1, &[("127.0.0.66", 8)]), &traffic);
    match &applies(&commands)[0].1 {
        ActionSpec::Block { ttl_ms, .. } => assert_eq!(*ttl_ms, 2 * s.block_ttl_ms),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_canaried_prefix_rule_that_hits_a_legitimate_client_is_reverted_and_learned_from() {
    let mut s = settings();
    s.guardrails.max_traffic_share = 0.5;
    let mut healer = Healer::new(s.clone(), None);
    let victim = key("127.0.0.10");
    let traffic = Ledger {
        good: vec![victim.clone()],
        requests: BTreeMap::from([(victim.clone(), 10)]),
    };
    let commands = healer.tick(
        &attack_window(
            0,
            &[("127.0.0.101", 9), ("127.0.0.102", 9), ("127.0.0.103", 9)],
        ),
        &traffic,
    );
    confirm_all(&mut healer, &commands, SECOND);
    // Three offenders in one /24: a prefix rule, canaried.
    let commands = healer.tick(&window(1, 100, 0), &traffic);
    let applied = applies(&commands);
    assert_eq!(applied.len(), 1, "{commands:?}");
    let ActionSpec::Block {
        target,
        canary_percent,
        ..
    } = &applied[0].1
    else {
        panic!("{applied:?}")
    };
    assert_eq!(target.to_string(), "127.0.0.0/24");
    assert_eq!(*canary_percent, Some(s.canary.share_percent));
    confirm_all(&mut healer, &commands, 2 * SECOND);
    let prefix_action = applied[0].0;
    assert_eq!(
        healer.action(prefix_action).unwrap().state,
        ActionState::Canary
    );
    let before = healer.thresholds().prefix_offenders;

    // The victim's requests meet the canary.
    let mut w = window(2, 100, 0);
    w.clients.insert(
        victim,
        ClientWindow {
            canary_hits: 6,
            blocked: 3,
            clean: 3,
            ..ClientWindow::default()
        },
    );
    let commands = healer.tick(&w, &traffic);
    assert!(
        commands.contains(&Command::Revert {
            action: prefix_action,
            spec: applied[0].1.clone()
        }),
        "{commands:?}"
    );
    let action = healer.action(prefix_action).unwrap();
    assert_eq!(action.state, ActionState::Reverted);
    assert!(action.notes.iter().any(|n| n.text.contains("127.0.0.10")));
    assert!(
        healer.thresholds().prefix_offenders > before,
        "a false alarm raises the bar"
    );
    let incident = healer.incident(action.incident).unwrap();
    assert_eq!(incident.state, State::Normal);
    assert!(incident.outcome.as_deref().unwrap().contains("false alarm"));
    // The offenders keep their own blocks, and the prefix is not proposed again at once.
    assert_eq!(healer.blocks_in_effect().len(), 3);
    assert!(applies(&healer.tick(&window(3, 100, 0), &traffic)).is_empty());
}

#[test]
fn a_canary_without_harm_is_promoted() {
    let mut s = settings();
    s.canary.duration_ms = 2 * SECOND;
    let mut healer = Healer::new(s, None);
    // The attacker has a good history (a compromised client): its block is canaried.
    let traffic = Ledger {
        good: vec![key("198.51.100.7")],
        ..Ledger::default()
    };
    let commands = healer.tick(&attack_window(0, &[("198.51.100.7", 9)]), &traffic);
    let (id, spec) = applies(&commands)[0].clone();
    assert!(matches!(
        spec,
        ActionSpec::Block {
            canary_percent: Some(_),
            ..
        }
    ));
    healer.applied(id, Ok(None), SECOND);
    // It keeps attacking through the canary's unblocked share: no harm, then promotion.
    healer.tick(&attack_window(1, &[("198.51.100.7", 4)]), &traffic);
    assert_eq!(healer.action(id).unwrap().state, ActionState::Canary);
    let commands = healer.tick(&attack_window(3, &[("198.51.100.7", 4)]), &traffic);
    assert!(
        commands
            .iter()
            .any(|c| matches!(c, Command::Promote { action, .. } if *action == id)),
        "{commands:?}"
    );
    healer.tick(&window(4, 100, 0), &traffic);
    assert_eq!(healer.incident(1).unwrap().state, State::Normal);
}

#[test]
fn guardrails_refuse_and_the_incident_escalates_with_the_reason() {
    let mut s = settings();
    s.guardrails.allowlist = vec!["10.0.0.0/8".parse().unwrap()];
    s.remediation_hook = true;
    let mut healer = Healer::new(s, None);
    let traffic = Ledger::default();
    let commands = healer.tick(&attack_window(0, &[("10.1.2.3", 9)]), &traffic);
    let applied = applies(&commands);
    assert_eq!(applied.len(), 1);
    assert_eq!(
        applied[0].1.kind(),
        ActionKind::Hook,
        "the block was refused, the hook is next"
    );
    let refused = &healer.actions()[0];
    assert_eq!(refused.state, ActionState::Refused);
    assert!(refused.notes[0].text.contains("allowlisted"));
}

#[test]
fn observe_mode_records_what_it_would_do_and_changes_nothing() {
    let mut s = settings();
    s.mode = Mode::Observe;
    let mut healer = Healer::new(s, None);
    let commands = healer.tick(&attack_window(0, &[("192.0.2.1", 9)]), &Ledger::default());
    assert!(applies(&commands).is_empty());
    let incident = healer.incident(1).unwrap();
    assert_eq!(incident.state, State::Escalated);
    assert!(
        incident
            .transitions
            .last()
            .unwrap()
            .reason
            .contains("would block 192.0.2.1")
    );
    assert_eq!(healer.actions()[0].state, ActionState::Observed);
    let commands = healer.tick(&window(1, 10, 0), &Ledger::default());
    assert!(commands.contains(&Command::Notify {
        incident: 1,
        event: "resolved"
    }));
}

#[test]
fn an_unverified_reroute_hands_over_to_the_circuit_breaker() {
    let mut s = settings();
    s.verify_timeout_windows = 2;
    let mut healer = Healer::new(s, None);
    let traffic = Ledger::default();
    let commands = healer.tick(&window(0, 20, 20), &traffic);
    confirm_all(&mut healer, &commands, SECOND);
    // The fallback fails too.
    healer.tick(&window(1, 20, 20), &traffic);
    let commands = healer.tick(&window(2, 20, 20), &traffic);
    let applied = applies(&commands);
    assert_eq!(applied.len(), 1, "{commands:?}");
    assert_eq!(applied[0].1.kind(), ActionKind::CircuitBreak);
    assert!(commands.iter().any(|c| matches!(c, Command::Revert { .. })));
    assert_eq!(healer.actions()[0].state, ActionState::Failed);
    let incident = healer.incident(1).unwrap();
    assert!(
        incident
            .transitions
            .iter()
            .any(|t| t.from == State::Verification && t.to == State::Analysis)
    );
}

#[test]
fn abuse_is_throttled_and_an_operator_block_of_a_flagged_client_lowers_the_attack_bar() {
    let mut s = settings();
    s.abuse_refusals = 10;
    let mut healer = Healer::new(s, None);
    let traffic = Ledger::default();
    let mut w = window(0, 100, 0);
    w.clients.insert(
        key("203.0.113.5"),
        ClientWindow {
            rate_limited: 40,
            ..ClientWindow::default()
        },
    );
    let applied = applies(&healer.tick(&w, &traffic));
    assert_eq!(applied[0].1.kind(), ActionKind::Throttle);
    let before = healer.thresholds().attack_findings;
    let mut w = attack_window(1, &[("203.0.113.9", 2)]);
    w.operator_blocks = vec!["203.0.113.9".parse().unwrap()];
    healer.tick(&w, &traffic);
    assert!(healer.thresholds().attack_findings < before);
}

#[test]
fn state_survives_a_restart_and_blocks_are_reinstated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("heal.json");
    let mut healer = Healer::new(settings(), None);
    let commands = healer.tick(&attack_window(0, &[("192.0.2.44", 9)]), &Ledger::default());
    confirm_all(&mut healer, &commands, SECOND);
    healer.tick(&window(1, 10, 0), &Ledger::default());
    apiguard_heal::store::save(&path, &healer.persisted()).unwrap();

    let restored = apiguard_heal::store::load(&path).unwrap().unwrap();
    let mut again = Healer::new(settings(), Some(restored));
    assert_eq!(again.incidents().len(), 1);
    assert_eq!(again.incident(1).unwrap().transitions.len(), 5);
    assert!(!again.audit().is_empty());
    let commands = again.restore(3 * SECOND);
    assert!(
        matches!(&commands[..], [Command::Reinstate { action: 1, .. }]),
        "{commands:?}"
    );
    // New incidents continue the numbering.
    again.tick(&attack_window(3, &[("192.0.2.45", 9)]), &Ledger::default());
    assert_eq!(again.incidents().last().unwrap().id, 2);

    std::fs::write(&path, b"{not json").unwrap();
    assert!(apiguard_heal::store::load(&path).is_err());
    assert!(
        apiguard_heal::store::load(&dir.path().join("missing.json"))
            .unwrap()
            .is_none()
    );
}

#[test]
fn an_authenticated_attacker_is_blocked_by_identity_and_its_neighbours_behind_the_nat_are_not() {
    let s = settings();
    let mut healer = Healer::new(s.clone(), None);
    let traffic = Ledger::default();
    let nat = ip("198.51.100.20");
    let mut w = window(0, 100, 0);
    let mut mallory = ClientWindow {
        flagged: 9,
        refused: 9,
        ..ClientWindow::default()
    };
    mallory.seen_from(nat, Some(0xfeed));
    w.clients.insert(key("identity:mallory"), mallory);
    let mut bob = ClientWindow {
        clean: 20,
        ..ClientWindow::default()
    };
    bob.seen_from(nat, Some(0xbeef));
    w.clients.insert(key("identity:bob"), bob.clone());
    let commands = healer.tick(&w, &traffic);
    let applied = applies(&commands);
    assert_eq!(applied.len(), 1, "{commands:?}");
    assert_eq!(
        applied[0].1,
        ActionSpec::Block {
            target: Target::Identity("mallory".into()),
            ttl_ms: s.block_ttl_ms,
            canary_percent: None,
            offenders: vec![key("identity:mallory")],
        }
    );
    confirm_all(&mut healer, &commands, SECOND);
    // Mallory's requests are now refused by the rule; bob goes on.
    let mut w = window(1, 100, 0);
    let mut refused = ClientWindow {
        blocked: 5,
        ..ClientWindow::default()
    };
    refused.seen_from(nat, Some(0xfeed));
    w.clients.insert(key("identity:mallory"), refused);
    w.clients.insert(key("identity:bob"), bob);
    healer.tick(&w, &traffic);
    let incident = healer.incident(1).unwrap();
    assert_eq!(incident.subject, "client:identity:mallory");
    assert_eq!(incident.state, State::Normal, "{incident:?}");
    assert_eq!(
        healer.blocks_in_effect(),
        vec![(1, Target::Identity("mallory".into()))]
    );
    // A repeat offence after the block expired doubles the TTL, as for addresses.
    let later = s.block_ttl_ms / SECOND + 2;
    healer.tick(&window(later, 100, 0), &traffic);
    let commands = healer.tick(
        &attack_window(later + 1, &[("identity:mallory", 8)]),
        &traffic,
    );
    match &applies(&commands)[0].1 {
        ActionSpec::Block { ttl_ms, target, .. } => {
            assert_eq!(*target, Target::Identity("mallory".into()));
            assert_eq!(*ttl_ms, 2 * s.block_ttl_ms);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_canaried_identity_block_on_a_good_account_that_turns_clean_is_reverted() {
    let mut healer = Healer::new(settings(), None);
    let alice = key("identity:alice");
    let traffic = Ledger {
        good: vec![alice.clone()],
        ..Ledger::default()
    };
    let commands = healer.tick(&attack_window(0, &[("identity:alice", 6)]), &traffic);
    let (id, spec) = applies(&commands)[0].clone();
    assert!(
        matches!(&spec, ActionSpec::Block { target: Target::Identity(s), canary_percent: Some(_), .. } if s == "alice"),
        "an account with a good history is canaried: {spec:?}"
    );
    healer.applied(id, Ok(None), SECOND);
    let mut w = window(1, 100, 0);
    w.clients.insert(
        alice,
        ClientWindow {
            canary_hits: 4,
            blocked: 2,
            clean: 2,
            ..ClientWindow::default()
        },
    );
    let commands = healer.tick(&w, &traffic);
    assert!(
        commands.contains(&Command::Revert {
            action: id,
            spec: spec.clone()
        }),
        "{commands:?}"
    );
    assert_eq!(healer.action(id).unwrap().state, ActionState::Reverted);
}

/// Clients attacking from three networks with one tool, and a legitimate client using the
/// same software.
fn fingerprint_window(n: u64, attackers: &[&str], flagged: u32, blocked: u32) -> Window {
    let mut w = window(n, 200, 0);
    for attacker in attackers {
        let mut c = ClientWindow {
            flagged,
            refused: flagged,
            blocked,
            ..ClientWindow::default()
        };
        c.seen_from(ip(attacker), Some(0xabad1dea));
        w.clients.insert(key(attacker), c);
    }
    w
}

#[test]
fn offenders_sharing_a_fingerprint_across_networks_get_a_canaried_fingerprint_rule() {
    let mut s = settings();
    s.guardrails.max_traffic_share = 0.5;
    let mut healer = Healer::new(s.clone(), None);
    let regular = key("192.0.2.200");
    let traffic = Ledger {
        good: vec![regular.clone()],
        ..Ledger::default()
    };
    let attackers = ["203.0.113.9", "198.51.100.9", "192.0.2.9"];
    // One network alone is not a fingerprint rule.
    let commands = healer.tick(
        &fingerprint_window(0, &["203.0.113.1", "203.0.113.2", "203.0.113.3"], 9, 0),
        &traffic,
    );
    assert!(
        applies(&commands).iter().all(|(_, spec)| !matches!(
            spec,
            ActionSpec::Block {
                target: Target::Fingerprint(_),
                ..
            }
        )),
        "{commands:?}"
    );
    let commands = healer.tick(&fingerprint_window(1, &attackers, 9, 0), &traffic);
    let fingerprint_rule = applies(&commands)
        .into_iter()
        .find(|(_, spec)| {
            matches!(
                spec,
                ActionSpec::Block {
                    target: Target::Fingerprint(0xabad1dea),
                    ..
                }
            )
        })
        .unwrap_or_else(|| panic!("{commands:?}"));
    let ActionSpec::Block {
        canary_percent,
        offenders,
        ..
    } = &fingerprint_rule.1
    else {
        unreachable!()
    };
    assert_eq!(*canary_percent, Some(s.canary.share_percent));
    assert_eq!(offenders.len(), 3);
    let incident = healer
        .incidents()
        .iter()
        .find(|i| i.kind == "shared_fingerprint")
        .unwrap();
    assert_eq!(incident.subject, "fingerprint:00000000abad1dea");
    confirm_all(&mut healer, &commands, 2 * SECOND);
    // A regular client with the same software meets the canary: the rule is reverted.
    let mut w = window(2, 200, 0);
    let mut c = ClientWindow {
        canary_hits: 5,
        clean: 3,
        blocked: 2,
        ..ClientWindow::default()
    };
    c.seen_from(ip("192.0.2.200"), Some(0xabad1dea));
    w.clients.insert(regular, c);
    let commands = healer.tick(&w, &traffic);
    assert!(
        commands
            .iter()
            .any(|c| matches!(c, Command::Revert { action, .. } if *action == fingerprint_rule.0)),
        "{commands:?}"
    );
    // Not proposed again while it cools down, even though the blocked offenders keep coming.
    let commands = healer.tick(&fingerprint_window(3, &attackers, 0, 5), &traffic);
    assert!(
        applies(&commands).iter().all(|(_, spec)| !matches!(
            spec,
            ActionSpec::Block {
                target: Target::Fingerprint(_),
                ..
            }
        )),
        "{commands:?}"
    );
}
