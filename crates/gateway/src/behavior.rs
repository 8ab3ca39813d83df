//! Turns the `behavior:` settings (top level, then each route's changes) into the behaviour
//! stage's compiled settings, reporting every invalid value with its route.

use apiguard_behavior::{
    AccountParams, BotParams, BucketParams, Limits, Mode, RateAnomalyParams, SequenceParams,
    Settings, ShapeParams, VolumeParams,
};

use crate::config::{
    AccountsConfig, BehaviorConfig, BehaviorMode, BotConfig, BucketConfig, Config,
    RateAnomalyConfig, RouteConfig, SequenceConfig, ShapeConfig, VolumeConfig,
};
use crate::load::Problem;

/// The memory bounds the engine is created with (read at start only).
pub fn limits(config: &Config) -> Limits {
    let b = config.behavior.clone().unwrap_or_default();
    Limits {
        max_endpoints: b.max_endpoints.max(1),
        max_clients: b.max_clients.max(1),
        max_params: b.max_params.max(1),
    }
}

/// Where the baselines are persisted and how often (read at start only).
pub fn persistence(config: &Config) -> Option<(std::path::PathBuf, std::time::Duration)> {
    let b = config.behavior.as_ref()?;
    let path = b.persist_path.as_ref()?;
    Some((
        path.into(),
        b.persist_interval.0.max(std::time::Duration::from_secs(1)),
    ))
}

/// Every route's effective settings, in route order; `None` when behaviour is off for it.
pub fn compile_behavior(config: &Config, problems: &mut Vec<Problem>) -> Vec<Option<Settings>> {
    let global = config.behavior.clone().unwrap_or(BehaviorConfig {
        mode: BehaviorMode::Off,
        ..BehaviorConfig::default()
    });
    let before = problems.len();
    for (what, value) in [
        ("max_endpoints", global.max_endpoints),
        ("max_clients", global.max_clients),
        ("max_params", global.max_params),
    ] {
        if value == 0 {
            problems.push(Problem::general(format!(
                "behavior.{what} must be at least 1"
            )));
        }
    }
    if global.persist_interval.0 < std::time::Duration::from_secs(1) {
        problems.push(Problem::general(
            "behavior.persist_interval must be at least 1s",
        ));
    }
    if global.persist_path.as_deref() == Some("") {
        problems.push(Problem::general(
            "behavior.persist_path is empty: name a file or leave the key out",
        ));
    }
    check_shape("behavior.shape", &global.shape, problems);
    for (name, bucket) in buckets(&global) {
        check_bucket(&format!("behavior.{name}"), bucket, problems);
    }
    check_sequence("behavior.sequence", &global.sequence, problems);
    check_rate_anomaly("behavior.rate_anomaly", &global.rate_anomaly, problems);
    check_accounts("behavior.accounts", &global.accounts, problems);
    check_volume("behavior.volume", &global.volume, problems);
    let global_ok = problems.len() == before;
    config
        .routes
        .iter()
        .map(|route| effective(&global, route, global_ok, problems))
        .collect()
}

fn buckets(b: &BehaviorConfig) -> [(&'static str, &BucketConfig); 5] {
    [
        ("enumeration", &b.enumeration),
        ("probing", &b.probing),
        ("crawling", &b.crawling),
        ("rate", &b.rate),
        ("auth_failures", &b.auth_failures),
    ]
}

fn check_shape(path: &str, shape: &ShapeConfig, problems: &mut Vec<Problem>) {
    if shape.min_samples == 0 {
        problems.push(Problem::general(format!(
            "{path}.min_samples must be at least 1"
        )));
    }
    if !(shape.length_factor.is_finite() && shape.length_factor >= 1.0) {
        problems.push(Problem::general(format!(
            "{path}.length_factor must be a number of at least 1.0, not {}",
            shape.length_factor
        )));
    }
    if !(1..=256).contains(&shape.enum_max_values) {
        problems.push(Problem::general(format!(
            "{path}.enum_max_values must be 1 to 256, not {}",
            shape.enum_max_values
        )));
    }
}

fn check_bucket(path: &str, bucket: &BucketConfig, problems: &mut Vec<Problem>) {
    if bucket.capacity == 0 {
        problems.push(Problem::general(format!(
            "{path}.capacity must be at least 1"
        )));
    }
    if bucket.leak.0.is_zero() {
        problems.push(Problem::general(format!(
            "{path}.leak must be longer than 0"
        )));
    }
}

fn check_sequence(path: &str, s: &SequenceConfig, problems: &mut Vec<Problem>) {
    if s.min_samples == 0 {
        problems.push(Problem::general(format!(
            "{path}.min_samples must be at least 1"
        )));
    }
    if !(s.rare_ratio.is_finite() && (0.0..=0.5).contains(&s.rare_ratio)) {
        problems.push(Problem::general(format!(
            "{path}.rare_ratio must be 0 to 0.5, not {}",
            s.rare_ratio
        )));
    }
    if !(1..=1024).contains(&s.max_predecessors) {
        problems.push(Problem::general(format!(
            "{path}.max_predecessors must be 1 to 1024, not {}",
            s.max_predecessors
        )));
    }
    if s.session_gap.0.is_zero() {
        problems.push(Problem::general(format!(
            "{path}.session_gap must be longer than 0"
        )));
    }
}

fn check_rate_anomaly(path: &str, r: &RateAnomalyConfig, problems: &mut Vec<Problem>) {
    if r.window.0 < std::time::Duration::from_secs(1) {
        problems.push(Problem::general(format!(
            "{path}.window must be at least 1s"
        )));
    }
    for (what, value) in [
        ("min_windows", r.min_windows),
        ("min_requests", u64::from(r.min_requests)),
        ("min_responses", u64::from(r.min_responses)),
    ] {
        if value == 0 {
            problems.push(Problem::general(format!(
                "{path}.{what} must be at least 1"
            )));
        }
    }
    if !(r.deviations.is_finite() && r.deviations >= 1.0) {
        problems.push(Problem::general(format!(
            "{path}.deviations must be a number of at least 1.0, not {}",
            r.deviations
        )));
    }
    if !(r.min_error_ratio.is_finite() && (0.0..=1.0).contains(&r.min_error_ratio)) {
        problems.push(Problem::general(format!(
            "{path}.min_error_ratio must be 0 to 1, not {}",
            r.min_error_ratio
        )));
    }
}

fn check_volume(path: &str, v: &VolumeConfig, problems: &mut Vec<Problem>) {
    if v.min_samples == 0 {
        problems.push(Problem::general(format!(
            "{path}.min_samples must be at least 1"
        )));
    }
    for (what, value) in [("deviations", v.deviations), ("factor", v.factor)] {
        if !(value.is_finite() && value >= 1.0) {
            problems.push(Problem::general(format!(
                "{path}.{what} must be a number of at least 1.0, not {value}"
            )));
        }
    }
}

fn volume(v: &VolumeConfig) -> Option<VolumeParams> {
    v.enabled.then_some(VolumeParams {
        min_samples: v.min_samples,
        deviations: v.deviations,
        factor: v.factor,
        min_payload_bytes: v.min_payload_bytes,
        latency_floor_ms: v.latency_floor.0.as_secs_f64() * 1000.0,
    })
}

fn check_accounts(path: &str, a: &AccountsConfig, problems: &mut Vec<Problem>) {
    check_bucket(
        path,
        &BucketConfig {
            enabled: a.enabled,
            capacity: a.capacity,
            leak: a.leak,
        },
        problems,
    );
    if let Some(field) = &a.field
        && (field.is_empty() || field.split('.').any(str::is_empty))
    {
        problems.push(Problem::general(format!(
            "{path}.field `{field}` must be a field name, dotted for nested JSON (`user.email`)"
        )));
    }
}

fn bot(b: &BotConfig) -> Option<BotParams> {
    b.enabled.then_some(BotParams {
        automation_agents: b.automation_agents,
        consistency: b.consistency,
    })
}

fn sequence(s: &SequenceConfig) -> Option<SequenceParams> {
    s.enabled.then_some(SequenceParams {
        min_samples: s.min_samples,
        rare_ratio: s.rare_ratio,
        max_predecessors: s.max_predecessors,
        session_gap_ms: (s.session_gap.0.as_millis() as u64).max(1),
    })
}

fn rate_anomaly(r: &RateAnomalyConfig) -> Option<RateAnomalyParams> {
    r.enabled.then_some(RateAnomalyParams {
        window_ms: (r.window.0.as_millis() as u64).max(1),
        min_windows: r.min_windows,
        deviations: r.deviations,
        min_requests: r.min_requests,
        min_responses: r.min_responses,
        min_error_ratio: r.min_error_ratio,
    })
}

fn accounts(a: &AccountsConfig) -> Option<AccountParams> {
    a.enabled.then(|| AccountParams {
        bucket: BucketParams {
            capacity: a.capacity,
            leak_ms: (a.leak.0.as_millis() as u64).max(1),
        },
        field: a.field.clone(),
    })
}

fn params(bucket: &BucketConfig) -> Option<BucketParams> {
    bucket.enabled.then_some(BucketParams {
        capacity: bucket.capacity,
        leak_ms: (bucket.leak.0.as_millis() as u64).max(1),
    })
}

fn effective(
    global: &BehaviorConfig,
    route: &RouteConfig,
    global_ok: bool,
    problems: &mut Vec<Problem>,
) -> Option<Settings> {
    let local = &route.behavior;
    let before = problems.len();
    let prefix = format!("route `{}`: behavior", route.id.value);
    let shape = local.shape.as_ref().unwrap_or(&global.shape);
    if let Some(s) = &local.shape {
        check_shape(&format!("{prefix}.shape"), s, problems);
    }
    let mut pick = |name: &str, local: &Option<BucketConfig>, global: &BucketConfig| {
        if let Some(b) = local {
            check_bucket(&format!("{prefix}.{name}"), b, problems);
        }
        params(local.as_ref().unwrap_or(global))
    };
    let enumeration = pick("enumeration", &local.enumeration, &global.enumeration);
    let probing = pick("probing", &local.probing, &global.probing);
    let crawling = pick("crawling", &local.crawling, &global.crawling);
    let rate = pick("rate", &local.rate, &global.rate);
    let auth_failures = pick("auth_failures", &local.auth_failures, &global.auth_failures);
    if let Some(s) = &local.sequence {
        check_sequence(&format!("{prefix}.sequence"), s, problems);
    }
    if let Some(r) = &local.rate_anomaly {
        check_rate_anomaly(&format!("{prefix}.rate_anomaly"), r, problems);
    }
    if let Some(a) = &local.accounts {
        check_accounts(&format!("{prefix}.accounts"), a, problems);
    }
    if let Some(v) = &local.volume {
        check_volume(&format!("{prefix}.volume"), v, problems);
    }
    let volume = volume(local.volume.as_ref().unwrap_or(&global.volume));
    let bot = bot(local.bot.as_ref().unwrap_or(&global.bot));
    let sequence = sequence(local.sequence.as_ref().unwrap_or(&global.sequence));
    let rate_anomaly = rate_anomaly(local.rate_anomaly.as_ref().unwrap_or(&global.rate_anomaly));
    let accounts = accounts(local.accounts.as_ref().unwrap_or(&global.accounts));
    let mode = match local.mode.unwrap_or(global.mode) {
        BehaviorMode::Off => return None,
        BehaviorMode::Learn => Mode::Learn,
        BehaviorMode::Detect => Mode::Detect,
        BehaviorMode::Enforce => Mode::Enforce,
    };
    if !global_ok || problems.len() > before {
        return None;
    }
    Some(Settings {
        mode,
        shape: shape.enabled.then_some(ShapeParams {
            min_samples: shape.min_samples,
            length_factor: shape.length_factor,
            enum_max_values: shape.enum_max_values,
        }),
        enumeration,
        probing,
        crawling,
        rate,
        auth_failures,
        bot,
        sequence,
        rate_anomaly,
        accounts,
        volume,
    })
}
