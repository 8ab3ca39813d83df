use std::net::SocketAddr;
use std::time::Duration;

use apiguard_model::{AuthMethod, ClientInfo, Identity, Outcome, RequestContext, RequestView};
use http::{HeaderMap, Method, Uri, Version};
use prometheus::IntCounter;

use super::*;

fn spec(name: &str, key: KeyKind, rate: u32, per: Duration, burst: u32) -> LimitSpec {
    LimitSpec {
        name: name.into(),
        key,
        rate,
        per,
        burst,
        cluster: true,
        max_keys: 1000,
    }
}

fn limiter(spec: LimitSpec, clock: &PolicyClock) -> Arc<Limiter> {
    Arc::new(
        Limiter::new(
            "orders",
            spec,
            clock.clone(),
            IntCounter::new("refusals", "test").unwrap(),
        )
        .unwrap(),
    )
}

fn run(stage: &RateLimitStage, ip: &str, identity: Option<Identity>) -> (Outcome, RequestContext) {
    let client = ClientInfo {
        peer: SocketAddr::new(ip.parse().unwrap(), 40000),
        tls: false,
        client_cert_subject: None,
        client_cert_sans: Vec::new(),
    };
    let method = Method::GET;
    let uri: Uri = "/orders".parse().unwrap();
    let headers = HeaderMap::new();
    let view = RequestView {
        method: &method,
        uri: &uri,
        version: Version::HTTP_11,
        headers: &headers,
        client: &client,
        route: "orders",
        request_id: "test",
        body: None,
    };
    let mut ctx = RequestContext {
        identity,
        ..RequestContext::default()
    };
    let outcome = stage.inspect(&view, &mut ctx);
    (outcome, ctx)
}

fn header(ctx: &RequestContext, name: &HeaderName) -> Vec<String> {
    ctx.response_headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_burst_passes_then_429_until_the_bucket_refills() {
    let clock = PolicyClock::manual();
    let stage = RateLimitStage::new(
        vec![limiter(
            spec("per-client", KeyKind::Client, 10, Duration::from_secs(1), 3),
            &clock,
        )],
        true,
    );
    for remaining in [2, 1, 0] {
        let (outcome, ctx) = run(&stage, "198.51.100.7", None);
        assert!(matches!(outcome, Outcome::Continue));
        assert_eq!(
            header(&ctx, &RATELIMIT),
            [format!("\"per-client\";r={remaining};t=1")]
        );
        assert_eq!(header(&ctx, &RATELIMIT_POLICY), ["\"per-client\";q=10;w=1"]);
    }
    let (outcome, ctx) = run(&stage, "198.51.100.7", None);
    let Outcome::Block { status, finding } = outcome else {
        panic!("the fourth request must be refused")
    };
    assert_eq!(status, 429);
    assert_eq!(finding.rule_id, "ratelimit.client");
    assert_eq!(header(&ctx, &http::header::RETRY_AFTER), ["1"]);
    assert_eq!(header(&ctx, &RATELIMIT), ["\"per-client\";r=0;t=1"]);
    // Another client has its own bucket.
    assert!(matches!(
        run(&stage, "198.51.100.8", None).0,
        Outcome::Continue
    ));
    // One period (100 ms) later, one more request.
    clock.advance(Duration::from_millis(100));
    assert!(matches!(
        run(&stage, "198.51.100.7", None).0,
        Outcome::Continue
    ));
    assert!(matches!(
        run(&stage, "198.51.100.7", None).0,
        Outcome::Block { .. }
    ));
}

#[test]
fn retry_after_is_the_wait_in_whole_seconds() {
    let clock = PolicyClock::manual();
    let limit = limiter(
        spec("slow", KeyKind::Route, 1, Duration::from_secs(60), 1),
        &clock,
    );
    assert!(matches!(
        limit.check(&LimitKey::Route),
        Checked::Allowed { remaining: 0, .. }
    ));
    clock.advance(Duration::from_secs(15));
    let Checked::Refused { retry_after } = limit.check(&LimitKey::Route) else {
        panic!("refused")
    };
    assert_eq!(retry_after, Duration::from_secs(45));
}

#[test]
fn identity_limits_count_authenticated_subjects_only() {
    let clock = PolicyClock::manual();
    let stage = RateLimitStage::new(
        vec![limiter(
            spec("per-key", KeyKind::ApiKey, 1, Duration::from_secs(60), 1),
            &clock,
        )],
        false,
    );
    let key = |subject: &str, method| Identity {
        subject: subject.into(),
        method,
        claims: serde_json::Map::new(),
    };
    for _ in 0..3 {
        // Anonymous and JWT requests are not counted by an api_key limit.
        assert!(matches!(
            run(&stage, "198.51.100.7", None).0,
            Outcome::Continue
        ));
        assert!(matches!(
            run(
                &stage,
                "198.51.100.7",
                Some(key("billing", AuthMethod::Jwt))
            )
            .0,
            Outcome::Continue
        ));
    }
    let (outcome, ctx) = run(
        &stage,
        "198.51.100.7",
        Some(key("billing", AuthMethod::ApiKey)),
    );
    assert!(matches!(outcome, Outcome::Continue));
    assert!(
        ctx.response_headers.is_empty(),
        "headers are off on success"
    );
    // Same key from another address: same bucket.
    assert!(matches!(
        run(
            &stage,
            "203.0.113.1",
            Some(key("billing", AuthMethod::ApiKey))
        )
        .0,
        Outcome::Block { status: 429, .. }
    ));
    assert!(matches!(
        run(&stage, "203.0.113.1", Some(key("ops", AuthMethod::ApiKey))).0,
        Outcome::Continue
    ));
}

#[test]
fn ipv6_clients_are_counted_by_their_64() {
    let clock = PolicyClock::manual();
    let stage = RateLimitStage::new(
        vec![limiter(
            spec("client", KeyKind::Client, 1, Duration::from_secs(60), 1),
            &clock,
        )],
        false,
    );
    assert!(matches!(
        run(&stage, "2001:db8:1:2::1", None).0,
        Outcome::Continue
    ));
    assert!(matches!(
        run(&stage, "2001:db8:1:2::ffff", None).0,
        Outcome::Block { .. }
    ));
    assert!(matches!(
        run(&stage, "2001:db8:1:3::1", None).0,
        Outcome::Continue
    ));
}

#[test]
fn the_cluster_debt_raises_the_local_state_and_never_lowers_it() {
    let clock = PolicyClock::manual();
    let limit = limiter(
        spec("route", KeyKind::Route, 10, Duration::from_secs(1), 5),
        &clock,
    );
    limit.set_clustered(true);
    assert!(matches!(
        limit.check(&LimitKey::Route),
        Checked::Allowed { remaining: 4, .. }
    ));
    assert_eq!(limit.take_pending(), vec![(LimitKey::Route, 1)]);
    assert!(limit.take_pending().is_empty());
    // Other replicas admitted 4 more: the cluster state is 5 periods ahead.
    limit.merge_debt(&LimitKey::Route, Duration::from_millis(500));
    assert!(matches!(
        limit.check(&LimitKey::Route),
        Checked::Refused { .. }
    ));
    // A smaller debt does not give anything back.
    limit.merge_debt(&LimitKey::Route, Duration::from_millis(100));
    assert!(matches!(
        limit.check(&LimitKey::Route),
        Checked::Refused { .. }
    ));
    clock.advance(Duration::from_millis(100));
    assert!(matches!(
        limit.check(&LimitKey::Route),
        Checked::Allowed { remaining: 0, .. }
    ));
}

#[test]
fn keys_are_bounded_and_idle_ones_forgotten() {
    let clock = PolicyClock::manual();
    let mut limited = spec("client", KeyKind::Client, 1, Duration::from_secs(1), 1);
    limited.max_keys = 2;
    let limit = limiter(limited, &clock);
    let key = |n: u8| LimitKey::client(std::net::IpAddr::from([10, 0, 0, n]));
    assert!(matches!(limit.check(&key(1)), Checked::Allowed { .. }));
    assert!(matches!(limit.check(&key(2)), Checked::Allowed { .. }));
    // Past max_keys, new keys share one bucket.
    assert!(matches!(limit.check(&key(3)), Checked::Allowed { .. }));
    assert!(matches!(limit.check(&key(4)), Checked::Refused { .. }));
    assert_eq!(limit.tracked_keys(), 3);
    clock.advance(Duration::from_secs(2));
    limit.housekeep();
    assert_eq!(limit.tracked_keys(), 0);
    assert!(matches!(limit.check(&key(4)), Checked::Allowed { .. }));
}

#[test]
fn specs_are_checked_and_described() {
    let good = spec(
        "per-client",
        KeyKind::Client,
        100,
        Duration::from_secs(60),
        20,
    );
    assert!(good.quota().is_ok());
    assert_eq!(good.policy_item(), "\"per-client\";q=100;w=60");
    let fast = spec("fast", KeyKind::Client, 5, Duration::from_millis(100), 5);
    assert_eq!(fast.policy_item(), "\"fast\";q=50;w=1");
    assert!(
        spec("x", KeyKind::Client, 0, Duration::from_secs(1), 1)
            .quota()
            .is_err()
    );
    assert!(
        spec("x", KeyKind::Client, 1, Duration::from_secs(1), 0)
            .quota()
            .is_err()
    );
    assert!(
        spec("x", KeyKind::Client, 1, Duration::ZERO, 1)
            .quota()
            .is_err()
    );
    assert!(
        spec("bad name", KeyKind::Client, 1, Duration::from_secs(1), 1)
            .quota()
            .is_err()
    );
    assert!(
        spec("\"", KeyKind::Client, 1, Duration::from_secs(1), 1)
            .quota()
            .is_err()
    );
}

#[tokio::test]
async fn the_registry_keeps_limiters_across_reloads() {
    let limits = RateLimits::new(RateLimitMetrics::new());
    let first = limits
        .limiter(
            "orders",
            &spec("client", KeyKind::Client, 1, Duration::from_secs(60), 1),
        )
        .unwrap();
    assert!(matches!(
        first.check(&LimitKey::Route),
        Checked::Allowed { .. }
    ));
    let same = limits
        .limiter(
            "orders",
            &spec("client", KeyKind::Client, 1, Duration::from_secs(60), 1),
        )
        .unwrap();
    assert!(Arc::ptr_eq(&first, &same));
    assert!(matches!(
        same.check(&LimitKey::Route),
        Checked::Refused { .. }
    ));
    let changed = limits
        .limiter(
            "orders",
            &spec("client", KeyKind::Client, 2, Duration::from_secs(60), 2),
        )
        .unwrap();
    assert!(!Arc::ptr_eq(&first, &changed));
}

#[test]
fn ratelimit_items_are_written_like_format_would() {
    for (remaining, reset) in [(0, 0), (7, 1), (10, 60), (99_999, 86_400), (u64::MAX, 1)] {
        let mut items = String::new();
        super::push_item(&mut items, "per-client", remaining, reset);
        super::push_item(&mut items, "id", 1, 2);
        assert_eq!(
            items,
            format!("\"per-client\";r={remaining};t={reset}, \"id\";r=1;t=2")
        );
    }
}
