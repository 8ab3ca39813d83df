//! Property: whatever a participant puts in a report, and wherever it puts it, no raw
//! identifier (its id, name, organisation, host names, API key, e-mail addresses, tokens,
//! cookies, its own addresses) appears in the canonical report the hub publishes.

mod common;

use std::collections::BTreeMap;

use apiguard_hub::anonymise::Pseudonymiser;
use apiguard_hub::normalise::{NormaliseContext, RawReport, normalise};
use apiguard_hub::pipeline::ParticipantEntry;
use apiguard_hub::{Participant, Subscription};
use apiguard_model::threat::{Trust, is_pseudonym};
use chrono::Utc;
use proptest::prelude::*;
use uuid::Uuid;

/// The identifiers of one generated participant and its secrets.
#[derive(Debug, Clone)]
struct Identity {
    name: String,
    organisation: String,
    host: String,
    email: String,
    api_key: String,
    token: String,
    cookie: String,
    network: String,
    own_ip: String,
}

fn identity() -> impl Strategy<Value = Identity> {
    (
        "[a-z]{4}-[a-z0-9]{8}",
        "[A-Z][a-z]{5,8} [A-Z][a-z]{6,9} (Ltd|GmbH|Inc|SA)",
        "(api|shop|login|internal)\\.[a-z]{8}\\.(com|net|io|test)",
        "[a-z]{5,8}\\.[a-z]{5,8}@[a-z]{8}\\.(com|org)",
        "[0-9a-f]{64}",
        "[A-Za-z0-9]{16}[0-9][a-z][A-Za-z0-9_-]{14}",
        "[a-z0-9]{12}[0-9][a-z][a-z0-9]{10}",
        (11u8..=99, 100u8..=199, 0u8..=255, 1u8..=254),
    )
        .prop_map(
            |(name, organisation, host, email, key, token, cookie, (a, b, c, d))| Identity {
                name,
                organisation,
                host,
                email,
                api_key: format!("ahk_{key}"),
                token,
                cookie,
                network: format!("{a}.{b}.{c}.0/24"),
                own_ip: format!("{a}.{b}.{c}.{d}"),
            },
        )
}

/// Where an identifier may be smuggled into a user agent or a path.
fn ua_template() -> impl Strategy<Value = usize> {
    0usize..8
}

const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "sqlmap/1.7.2#stable",
    "curl/8.4.0",
    "python-requests/2.31.0",
    "Go-http-client/1.1",
];

fn build(
    identity: &Identity,
    ua_choice: usize,
    ua_base: usize,
    path_choice: usize,
    use_header_ua: bool,
    own_source: bool,
    attacker: u8,
) -> RawReport {
    let i = identity;
    let base = USER_AGENTS[ua_base % USER_AGENTS.len()];
    let smuggled = match ua_choice {
        0 => format!("{base} (contact {})", i.email),
        1 => format!("{base} {} for {}", i.name, i.organisation),
        2 => format!("{base} (+https://{}/bot.html)", i.host),
        3 => format!("{base} via {} from {}", i.host, i.own_ip),
        4 => format!("{base} token={} session={}", i.token, i.cookie),
        5 => format!("{base} Bearer {} key:{}", i.token, i.api_key),
        6 => format!("{}{}{}", i.name.to_uppercase(), base, i.api_key),
        _ => format!(
            "{base};{};{};{}",
            i.email,
            i.organisation.to_lowercase(),
            i.host.to_uppercase()
        ),
    };
    let path = match path_choice {
        0 => format!("/users/{}/orders/42", i.email),
        1 => format!("/tenants/{}/items", i.name),
        2 => format!("/proxy/{}/x?token={}", i.host, i.token),
        3 => format!("/keys/{}", i.api_key),
        4 => format!("/orgs/{}/billing", i.organisation.replace(' ', "%20")),
        5 => format!("/ip/{}/lookup", i.own_ip),
        6 => format!("/s/{}/{}", i.token, i.cookie),
        _ => format!("/login;jsessionid={}", i.cookie),
    };
    let mut headers = BTreeMap::from([
        (
            "Cookie".to_owned(),
            format!("session={}; theme=dark", i.cookie),
        ),
        ("Authorization".to_owned(), format!("Bearer {}", i.token)),
        ("Host".to_owned(), i.host.clone()),
        ("X-Forwarded-For".to_owned(), i.own_ip.clone()),
        ("X-Api-Key".to_owned(), i.api_key.clone()),
        ("From".to_owned(), i.email.clone()),
    ]);
    let user_agent = if use_header_ua {
        headers.insert("User-Agent".to_owned(), smuggled);
        None
    } else {
        Some(smuggled)
    };
    RawReport {
        attack: "sqli".into(),
        severity: Some("high".into()),
        source_ip: Some(if own_source {
            i.own_ip.clone()
        } else {
            format!("203.0.113.{attacker}")
        }),
        method: Some("POST".into()),
        path: Some(path),
        host: Some(i.host.clone()),
        user_agent,
        headers: Some(headers),
        payload: Some(format!("' OR 1=1 -- {} {}", i.email, i.token)),
        description: Some(format!(
            "{} of {} saw this on {} ({}); mail {} key {}",
            i.name, i.organisation, i.host, i.own_ip, i.email, i.api_key
        )),
        tls_ja3: Some("e7d705a3286e19ea42f587b344ee6865".into()),
        ..RawReport::default()
    }
}

fn secrets(identity: &Identity, participant_id: &str) -> Vec<String> {
    vec![
        participant_id.to_owned(),
        identity.name.clone(),
        identity.organisation.clone(),
        identity.host.clone(),
        identity.email.clone(),
        identity.api_key.clone(),
        identity.api_key["ahk_".len()..].to_owned(),
        identity.token.clone(),
        identity.cookie.clone(),
        identity.own_ip.clone(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn no_raw_identifier_reaches_a_published_report(
        identity in identity(),
        ua_choice in ua_template(),
        ua_base in 0usize..5,
        path_choice in 0usize..8,
        use_header_ua in any::<bool>(),
        own_source in prop::bool::weighted(0.2),
        attacker in 1u8..=254,
    ) {
        let settings = common::settings("");
        let participant = Participant {
            id: Uuid::now_v7().to_string(),
            name: identity.name.clone(),
            organisation: identity.organisation.clone(),
            own_networks: vec![identity.network.parse().unwrap()],
            own_hosts: vec![identity.host.clone()],
            subscription: Subscription::default(),
        };
        let entry = ParticipantEntry::new(participant.clone());
        let pseudonymiser = Pseudonymiser::new(settings.secret.clone(), settings.pseudonym_epoch);
        let now = Utc::now();
        let raw = build(&identity, ua_choice, ua_base, path_choice, use_header_ua, own_source, attacker);
        let context = NormaliseContext {
            settings: &settings,
            redactor: &entry.redactor,
            id: pseudonymiser.report_id(&participant.id, None, now),
            received_at: now,
            pseudonym: pseudonymiser.pseudonym(&participant.id, pseudonymiser.epoch_at(now)),
            trust: Trust { score: 50, corroborations: 1 },
        };
        let report = normalise(&raw, &context).expect("the report has indicators left");
        prop_assert!(is_pseudonym(&report.reporter));
        prop_assert!(report.validate().is_ok());
        if own_source {
            prop_assert!(report.indicators.ip.is_none(), "the reporter's own address was shared");
        }
        let published = String::from_utf8(report.to_json()).unwrap().to_lowercase();
        for secret in secrets(&identity, &participant.id) {
            prop_assert!(
                !published.contains(&secret.to_lowercase()),
                "`{}` leaked into {}", secret, published
            );
        }
    }
}
