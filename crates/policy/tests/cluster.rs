//! Cluster mode against the real Redis on 127.0.0.1:6379: two registries (two replicas)
//! share one limit; with Redis unreachable each keeps limiting locally.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use apiguard_policy::ratelimit::{
    Checked, ClusterSettings, KeyKind, LimitKey, LimitSpec, Limiter, RateLimitMetrics, RateLimits,
};

const REDIS: &str = "127.0.0.1:6379";

fn spec() -> LimitSpec {
    LimitSpec {
        name: "shared".into(),
        key: KeyKind::Route,
        rate: 10,
        per: Duration::from_secs(60),
        burst: 10,
        cluster: true,
        max_keys: 1000,
    }
}

fn settings(url: String, prefix: &str) -> ClusterSettings {
    ClusterSettings {
        url,
        sync_interval: Duration::from_millis(50),
        timeout: Duration::from_millis(500),
        key_prefix: prefix.into(),
    }
}

fn unique_prefix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("apiguard-test:{}:{nanos}", std::process::id())
}

fn allowed(limiter: &Limiter) -> bool {
    matches!(limiter.check(&LimitKey::Route), Checked::Allowed { .. })
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what}: not within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn two_replicas_share_one_limit_through_redis() {
    if !apiguard_testkit::require_service("Redis", REDIS) {
        return;
    }
    let prefix = unique_prefix();
    let replicas: Vec<Arc<RateLimits>> = (0..2)
        .map(|_| {
            let limits = RateLimits::new(RateLimitMetrics::new());
            limits.configure_cluster(Some(settings(format!("redis://{REDIS}"), &prefix)));
            limits
        })
        .collect();
    let a = replicas[0].limiter("orders", &spec()).unwrap();
    let b = replicas[1].limiter("orders", &spec()).unwrap();
    eventually("both replicas reach Redis", || {
        replicas.iter().all(|r| r.redis_up())
    })
    .await;

    // Replica A spends the whole burst.
    for i in 0..10 {
        assert!(allowed(&a), "request {i} on A");
    }
    assert!(!allowed(&a));
    // Give A's admissions time to reach Redis (several sync intervals).
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Replica B alone would allow 10; sharing, it learns the cluster state at its next sync
    // after it first sees the key.
    // 40 requests over about a second: B learns the cluster state at its first sync after
    // it sees the key, and refuses from then on.
    let mut passed_on_b = 0;
    for _ in 0..40 {
        if allowed(&b) {
            passed_on_b += 1;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        passed_on_b <= 4,
        "B let {passed_on_b} requests through a limit A had used up (local only would be 10)"
    );
    assert!(replicas[1].metrics.redis_syncs.get() > 0);
}

#[tokio::test]
async fn with_redis_unreachable_each_replica_limits_locally() {
    let port = apiguard_testkit::free_port();
    let limits = RateLimits::new(RateLimitMetrics::new());
    limits.configure_cluster(Some(settings(
        format!("redis://127.0.0.1:{port}"),
        &unique_prefix(),
    )));
    let limiter = limits.limiter("orders", &spec()).unwrap();
    eventually("the failure is noticed", || {
        limits.metrics.redis_errors.get() > 0
    })
    .await;
    assert_eq!(limits.metrics.redis_up.get(), 0);
    for i in 0..10 {
        assert!(allowed(&limiter), "request {i}");
    }
    assert!(!allowed(&limiter), "the local limit still holds");
}
