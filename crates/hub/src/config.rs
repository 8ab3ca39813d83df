//! The hub's configuration file (YAML), with a doc comment on every field. Parsed with
//! serde-saphyr, like the gateway's, and checked once into values the hub uses as they are.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::HubError;

/// The largest configuration file read.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The whole hub configuration file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "apiguard hub configuration")]
pub struct HubConfig {
    /// `IP:port` of the REST API (ingest, feed, admin). Port 0 picks a free port.
    pub listen: String,
    /// Where participants, keys and reports are stored: `sqlite://PATH` (created when
    /// missing), `sqlite::memory:`, or `postgres://USER@HOST:PORT/DB`.
    #[serde(default = "defaults::store")]
    pub store: String,
    /// RabbitMQ. Without it the hub runs embedded: an in-process bus (nothing survives a
    /// restart but what the store holds).
    #[serde(default)]
    pub broker: Option<BrokerConfig>,
    /// The hub secret that keys reporter pseudonyms and report ids: a file holding at least
    /// 32 bytes. Keep it private and stable: changing it changes every pseudonym.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// The hub secret inline (at least 32 characters), for tests and demos; `secret_file`
    /// wins when both are set.
    #[serde(default)]
    pub secret: Option<String>,
    /// How long a reporter keeps the same pseudonym, such as `24h` or `7d`.
    #[serde(default = "defaults::pseudonym_epoch")]
    pub pseudonym_epoch: String,
    /// SHA-256 (hex) of the bearer token that may call /admin. Without it the admin API is
    /// off. Make one with `printf %s "$TOKEN" | sha256sum`.
    #[serde(default)]
    pub admin_token_sha256: Option<String>,
    /// Size limits of ingest.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Defaults applied while normalising reports.
    #[serde(default)]
    pub reports: ReportsConfig,
    /// TLS on the listener (REST, gRPC, GraphQL, TAXII), optionally verifying client
    /// certificates (mTLS) so participants can authenticate by certificate. Without it the
    /// hub speaks plain HTTP.
    #[serde(default)]
    pub tls: Option<HubTlsConfig>,
    /// Promotion of indicators (k distinct organisations within a window, weighed by trust),
    /// participant trust scores, the allowlist and withdrawals (docs/hub.md, "Trust model").
    #[serde(default)]
    pub trust: TrustConfig,
}

/// TLS on the hub's listener.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HubTlsConfig {
    /// The server certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates (PEM) that sign participants' client certificates. With it the hub
    /// asks every client for a certificate and verifies it against these CAs; a participant
    /// registered with a certificate (fingerprint or subject) then authenticates with it.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: `optional` (default) accepts clients without a certificate (they
    /// authenticate by API key); `required` refuses the TLS handshake of any client without
    /// a certificate signed by `client_ca`.
    #[serde(default)]
    pub client_auth: ClientAuthMode,
}

/// Whether clients must present a certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMode {
    /// A certificate is verified when presented; clients without one may use an API key.
    #[default]
    Optional,
    /// Every client must present a certificate signed by `client_ca`.
    Required,
}

/// RabbitMQ settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// AMQP URL, such as `amqp://guest:guest@127.0.0.1:5672/%2f`.
    pub url: String,
    /// Prefix of every exchange and queue the hub declares.
    #[serde(default = "defaults::prefix")]
    pub prefix: String,
    /// The most raw reports waiting on the ingest queue. Past it ingest answers 429.
    #[serde(default = "defaults::ingest_max_length")]
    pub ingest_max_length: u32,
    /// The most reports waiting in one participant's queue; the oldest are dropped past it.
    #[serde(default = "defaults::participant_max_length")]
    pub participant_max_length: u32,
    /// Time allowed for one broker operation (publish confirm, ack, declare). A timeout is
    /// treated as a dead connection: the hub reconnects and redeclares.
    #[serde(default = "defaults::broker_timeout")]
    pub timeout: String,
    /// Worker tasks consuming the ingest queue.
    #[serde(default = "defaults::workers")]
    pub workers: usize,
    /// Deliveries a worker may hold unacknowledged. Those waiting when the worker is ready
    /// (up to 256) are processed as one batch: stored in one transaction, their feed items
    /// published together; up to four batches await their confirms at once.
    #[serde(default = "defaults::prefetch")]
    pub prefetch: u16,
    /// How often a message may be redelivered (after a worker failure) before it is
    /// dead-lettered.
    #[serde(default = "defaults::delivery_limit")]
    pub delivery_limit: u32,
}

/// Ingest size limits.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// The largest request body accepted, in bytes.
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: usize,
    /// The most reports in one batch.
    #[serde(default = "defaults::max_batch")]
    pub max_batch: usize,
    /// The most reports one feed call returns.
    #[serde(default = "defaults::max_feed")]
    pub max_feed: usize,
    /// Capacity of the in-process ingest queue in embedded mode; past it ingest answers 429.
    #[serde(default = "defaults::embedded_queue")]
    pub embedded_queue: usize,
    /// How long the items of a `GET /v1/feed` answer wait for the participant's
    /// confirmation, such as `30s`. Unconfirmed by then, they are delivered again.
    #[serde(default = "defaults::feed_lease")]
    pub feed_lease: String,
    /// How long items stay in the feed log (the GraphQL `feed` query and subscription, the
    /// pull views), such as `30d`; older ones are pruned. At least `reports.max_ttl`, so
    /// nothing still valid is pruned. `0s` keeps them forever.
    #[serde(default = "defaults::feed_retention")]
    pub feed_retention: String,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: defaults::max_body_bytes(),
            max_batch: defaults::max_batch(),
            max_feed: defaults::max_feed(),
            embedded_queue: defaults::embedded_queue(),
            feed_lease: defaults::feed_lease(),
            feed_retention: defaults::feed_retention(),
        }
    }
}

/// Normalisation defaults.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportsConfig {
    /// How long indicators stay valid when the reporter names no TTL.
    #[serde(default = "defaults::ttl")]
    pub default_ttl: String,
    /// The longest TTL a reporter may ask for.
    #[serde(default = "defaults::max_ttl")]
    pub max_ttl: String,
    /// Single IPv6 addresses are shared as this prefix (one host controls at least a /64).
    #[serde(default = "defaults::ipv6_prefix")]
    pub ipv6_prefix: u8,
    /// Shortest prefix a reporter may name: broader ones are refused.
    #[serde(default = "defaults::min_ipv4_prefix")]
    pub min_ipv4_prefix: u8,
    /// Shortest IPv6 prefix a reporter may name.
    #[serde(default = "defaults::min_ipv6_prefix")]
    pub min_ipv6_prefix: u8,
}

impl Default for ReportsConfig {
    fn default() -> Self {
        Self {
            default_ttl: defaults::ttl(),
            max_ttl: defaults::max_ttl(),
            ipv6_prefix: defaults::ipv6_prefix(),
            min_ipv4_prefix: defaults::min_ipv4_prefix(),
            min_ipv6_prefix: defaults::min_ipv6_prefix(),
        }
    }
}

/// The trust model: when a reported indicator is promoted to the shared feed, how
/// participants earn and lose trust, what is never published, and how often expired
/// indicators are withdrawn.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// How many distinct organisations (not participants, not keys) must report an indicator
    /// within `window` before it is published. Each organisation weighs at most 1: its
    /// trust divided by `initial`, capped at 1; the weights must add up to `k`. Set 1 for a
    /// one-organisation demo.
    #[serde(default = "defaults::k")]
    pub k: u32,
    /// How far back reports count towards a promotion, such as `24h`. A report counts only
    /// while it is also still valid (its `valid_until` has not passed).
    #[serde(default = "defaults::window")]
    pub window: String,
    /// The trust score (0 to 1) of a new participant; a participant at or above it weighs
    /// fully. Must be above 0.
    #[serde(default = "defaults::initial")]
    pub initial: f64,
    /// The weight of one piece of evidence against a participant when a report of its was
    /// never corroborated (its validity and the window passed without a promotion). One
    /// per participant and indicator.
    #[serde(default = "defaults::uncorroborated_penalty")]
    pub uncorroborated_penalty: f64,
    /// The weight of one piece of evidence against a participant when it reported an
    /// allowlisted indicator (at most once per indicator and window), or contributed to an
    /// indicator withdrawn as a false positive.
    #[serde(default = "defaults::contradiction_penalty")]
    pub contradiction_penalty: f64,
    /// Benign infrastructure, as CIDR prefixes: reports naming an address inside (or a
    /// prefix overlapping) one of them are stored but never published, and count against
    /// their reporter.
    #[serde(default)]
    pub allowlist: Vec<String>,
    /// Add the built-in allowlist (public DNS resolvers and Cloudflare's published proxy
    /// ranges, see docs/hub.md) to `allowlist`.
    #[serde(default = "defaults::yes")]
    pub default_allowlist: bool,
    /// How often the hub looks for expired indicators to withdraw, reports to settle, and
    /// feed items to publish again, such as `5s`.
    #[serde(default = "defaults::sweep_interval")]
    pub sweep_interval: String,
}

impl Default for TrustConfig {
    fn default() -> Self {
        Self {
            k: defaults::k(),
            window: defaults::window(),
            initial: defaults::initial(),
            uncorroborated_penalty: defaults::uncorroborated_penalty(),
            contradiction_penalty: defaults::contradiction_penalty(),
            allowlist: Vec::new(),
            default_allowlist: true,
            sweep_interval: defaults::sweep_interval(),
        }
    }
}

mod defaults {
    pub fn store() -> String {
        "sqlite://apiguard-hub.db".to_owned()
    }
    pub fn pseudonym_epoch() -> String {
        "24h".to_owned()
    }
    pub fn prefix() -> String {
        "apiguard.hub".to_owned()
    }
    pub fn ingest_max_length() -> u32 {
        100_000
    }
    pub fn participant_max_length() -> u32 {
        100_000
    }
    pub fn broker_timeout() -> String {
        "5s".to_owned()
    }
    pub fn workers() -> usize {
        2
    }
    pub fn prefetch() -> u16 {
        1024
    }
    pub fn delivery_limit() -> u32 {
        5
    }
    pub fn max_body_bytes() -> usize {
        1024 * 1024
    }
    pub fn max_batch() -> usize {
        500
    }
    pub fn max_feed() -> usize {
        500
    }
    pub fn embedded_queue() -> usize {
        10_000
    }
    pub fn feed_lease() -> String {
        "30s".to_owned()
    }
    pub fn feed_retention() -> String {
        "30d".to_owned()
    }
    pub fn ttl() -> String {
        "1h".to_owned()
    }
    pub fn max_ttl() -> String {
        "7d".to_owned()
    }
    pub fn ipv6_prefix() -> u8 {
        64
    }
    pub fn min_ipv4_prefix() -> u8 {
        16
    }
    pub fn min_ipv6_prefix() -> u8 {
        32
    }
    pub fn k() -> u32 {
        3
    }
    pub fn window() -> String {
        "24h".to_owned()
    }
    pub fn initial() -> f64 {
        0.5
    }
    pub fn uncorroborated_penalty() -> f64 {
        0.25
    }
    pub fn contradiction_penalty() -> f64 {
        1.0
    }
    pub fn yes() -> bool {
        true
    }
    pub fn sweep_interval() -> String {
        "5s".to_owned()
    }
}

/// The configuration checked: durations parsed, the secret loaded, the address resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub store: String,
    pub broker: Option<BrokerSettings>,
    pub secret: Vec<u8>,
    pub pseudonym_epoch: Duration,
    pub admin_token_sha256: Option<[u8; 32]>,
    pub limits: LimitsConfig,
    /// `limits.feed_lease`, parsed.
    pub feed_lease: Duration,
    /// `limits.feed_retention`, parsed (`None`: forever).
    pub feed_retention: Option<Duration>,
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    pub ipv6_prefix: u8,
    pub min_ipv4_prefix: u8,
    pub min_ipv6_prefix: u8,
    /// The listener's TLS configuration (certificates loaded), when `tls` is set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub trust: crate::trust::TrustSettings,
}

/// Broker settings, checked.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    pub url: String,
    pub prefix: String,
    pub ingest_max_length: u32,
    pub participant_max_length: u32,
    pub timeout: Duration,
    pub workers: usize,
    pub prefetch: u16,
    pub delivery_limit: u32,
}

impl HubConfig {
    /// Parses YAML text.
    pub fn parse(text: &str) -> Result<Self, HubError> {
        serde_saphyr::from_str::<HubConfig>(text).map_err(|e| {
            let position = e
                .location()
                .map(|l| format!("{}:{}: ", l.line(), l.column()))
                .unwrap_or_default();
            let message = e.to_string();
            let first = message.lines().next().unwrap_or("invalid configuration");
            HubError::Config(format!("{position}{}", first.trim()))
        })
    }

    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<Self, HubError> {
        let unreadable =
            |e: std::io::Error| HubError::Config(format!("{}: cannot read: {e}", path.display()));
        let size = std::fs::metadata(path).map_err(unreadable)?.len();
        if size > MAX_CONFIG_BYTES {
            return Err(HubError::Config(format!(
                "{}: {size} bytes; the limit is {MAX_CONFIG_BYTES}",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(unreadable)?;
        Self::parse(&text).map_err(|e| match e {
            HubError::Config(message) => HubError::Config(format!("{}:{message}", path.display())),
            other => other,
        })
    }

    /// Checks every value and loads the secret.
    pub fn settings(&self) -> Result<Settings, HubError> {
        let bad = |m: String| HubError::Config(m);
        let listen = self
            .listen
            .parse::<SocketAddr>()
            .map_err(|_| bad(format!("listen: `{}` is not IP:port", self.listen)))?;
        let secret = match (&self.secret_file, &self.secret) {
            (Some(path), _) => std::fs::read(path)
                .map_err(|e| bad(format!("secret_file {}: {e}", path.display())))?,
            (None, Some(inline)) => inline.as_bytes().to_vec(),
            (None, None) => {
                return Err(bad(
                    "a hub secret is required: set secret_file (or secret)".to_owned()
                ));
            }
        };
        if secret.len() < 32 {
            return Err(bad(format!(
                "the hub secret has {} bytes; it needs at least 32",
                secret.len()
            )));
        }
        let admin_token_sha256 = match &self.admin_token_sha256 {
            None => None,
            Some(hex) => Some(
                crate::auth::parse_sha256_hex(hex)
                    .ok_or_else(|| bad("admin_token_sha256: not 64 hex digits".to_owned()))?,
            ),
        };
        let broker = match &self.broker {
            None => None,
            Some(b) => {
                if !(b.url.starts_with("amqp://") || b.url.starts_with("amqps://")) {
                    return Err(bad("broker.url: must start with amqp:// or amqps://".into()));
                }
                if b.prefix.is_empty()
                    || b.prefix.len() > 64
                    || !b
                        .prefix
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
                {
                    return Err(bad(
                        "broker.prefix: 1 to 64 characters of letters, digits, `.`, `_`, `-`"
                            .into(),
                    ));
                }
                if b.ingest_max_length == 0 || b.participant_max_length == 0 || b.prefetch == 0 {
                    return Err(bad(
                        "broker: queue lengths and prefetch must be positive".into()
                    ));
                }
                Some(BrokerSettings {
                    url: b.url.clone(),
                    prefix: b.prefix.clone(),
                    ingest_max_length: b.ingest_max_length,
                    participant_max_length: b.participant_max_length,
                    timeout: parse_duration(&b.timeout)
                        .map_err(|e| bad(format!("broker.timeout: {e}")))?,
                    workers: b.workers,
                    prefetch: b.prefetch,
                    delivery_limit: b.delivery_limit,
                })
            }
        };
        let duration = |field: &str, text: &str| {
            parse_duration(text).map_err(|e| bad(format!("{field}: {e}")))
        };
        let pseudonym_epoch = duration("pseudonym_epoch", &self.pseudonym_epoch)?;
        if pseudonym_epoch < Duration::from_secs(1) {
            return Err(bad("pseudonym_epoch: at least 1s".into()));
        }
        let r = &self.reports;
        if r.ipv6_prefix > 128 || r.min_ipv4_prefix > 32 || r.min_ipv6_prefix > 128 {
            return Err(bad("reports: prefix lengths out of range".into()));
        }
        if self.limits.max_batch == 0 || self.limits.max_body_bytes < 1024 {
            return Err(bad(
                "limits: max_batch must be positive and max_body_bytes at least 1024".into(),
            ));
        }
        let max_ttl = duration("reports.max_ttl", &r.max_ttl)?;
        let feed_lease = duration("limits.feed_lease", &self.limits.feed_lease)?;
        if feed_lease < Duration::from_millis(100) || feed_lease > Duration::from_secs(3600) {
            return Err(bad("limits.feed_lease: 100ms to 1h".into()));
        }
        let feed_retention = duration("limits.feed_retention", &self.limits.feed_retention)?;
        let feed_retention = (!feed_retention.is_zero()).then_some(feed_retention);
        if feed_retention.is_some_and(|retention| retention < max_ttl) {
            return Err(bad(format!(
                "limits.feed_retention: at least reports.max_ttl ({}), or 0s to keep everything",
                r.max_ttl
            )));
        }
        Ok(Settings {
            listen,
            store: self.store.clone(),
            broker,
            secret,
            pseudonym_epoch,
            admin_token_sha256,
            limits: self.limits.clone(),
            feed_lease,
            feed_retention,
            default_ttl: duration("reports.default_ttl", &r.default_ttl)?,
            max_ttl,
            ipv6_prefix: r.ipv6_prefix,
            min_ipv4_prefix: r.min_ipv4_prefix,
            min_ipv6_prefix: r.min_ipv6_prefix,
            tls: self
                .tls
                .as_ref()
                .map(crate::tls::server_config)
                .transpose()?,
            trust: self.trust.settings()?,
        })
    }
}

impl TrustConfig {
    /// Checks the trust section.
    pub fn settings(&self) -> Result<crate::trust::TrustSettings, HubError> {
        let bad = |m: String| HubError::Config(format!("trust.{m}"));
        if !(1..=1000).contains(&self.k) {
            return Err(bad(format!("k: 1 to 1000, not {}", self.k)));
        }
        let window = parse_duration(&self.window).map_err(|e| bad(format!("window: {e}")))?;
        if window < Duration::from_secs(1) {
            return Err(bad("window: at least 1s".into()));
        }
        if !(self.initial > 0.0 && self.initial <= 1.0) {
            return Err(bad(format!(
                "initial: above 0 and at most 1, not {}",
                self.initial
            )));
        }
        for (name, value) in [
            ("uncorroborated_penalty", self.uncorroborated_penalty),
            ("contradiction_penalty", self.contradiction_penalty),
        ] {
            if !(0.0..=100.0).contains(&value) {
                return Err(bad(format!("{name}: 0 to 100, not {value}")));
            }
        }
        if self.allowlist.len() > 10_000 {
            return Err(bad("allowlist: at most 10000 prefixes".into()));
        }
        let mut allowlist = Vec::with_capacity(self.allowlist.len());
        for (index, text) in self.allowlist.iter().enumerate() {
            allowlist.push(
                text.parse::<apiguard_model::threat::IpPrefix>()
                    .map_err(|e| bad(format!("allowlist[{index}]: {e}")))?,
            );
        }
        if self.default_allowlist {
            allowlist.extend(crate::trust::default_allowlist());
        }
        let sweep_interval = parse_duration(&self.sweep_interval)
            .map_err(|e| bad(format!("sweep_interval: {e}")))?;
        if sweep_interval < Duration::from_millis(10) {
            return Err(bad("sweep_interval: at least 10ms".into()));
        }
        Ok(crate::trust::TrustSettings {
            k: self.k,
            window,
            initial: self.initial,
            uncorroborated_penalty: self.uncorroborated_penalty,
            contradiction_penalty: self.contradiction_penalty,
            allowlist,
            sweep_interval,
        })
    }
}

/// Parses `250ms`, `30s`, `15m`, `24h` or `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit (ms, s, m, h, d)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 30s"))?;
    let seconds = match unit {
        "ms" => return Ok(Duration::from_millis(number)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}`: the unit must be ms, s, m, h or d")),
    };
    number
        .checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{text}` is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_config_gets_defaults() {
        let config =
            HubConfig::parse("listen: 127.0.0.1:0\nsecret: 0123456789abcdef0123456789abcdef\n")
                .unwrap();
        let settings = config.settings().unwrap();
        assert!(settings.broker.is_none());
        assert_eq!(settings.pseudonym_epoch, Duration::from_secs(86_400));
        assert_eq!(settings.ipv6_prefix, 64);
        assert_eq!(settings.trust.k, 3);
        assert_eq!(settings.trust.window, Duration::from_secs(86_400));
        assert!(
            settings
                .trust
                .allowlisted(&"1.1.1.1".parse().unwrap())
                .is_some()
        );
    }

    #[test]
    fn bad_trust_settings_are_refused_with_the_field() {
        for (yaml, field) in [
            ("trust:\n  k: 0\n", "trust.k"),
            ("trust:\n  initial: 0\n", "trust.initial"),
            ("trust:\n  window: 5\n", "trust.window"),
            (
                "trust:\n  allowlist: [\"10.0.0.0/33\"]\n",
                "trust.allowlist[0]",
            ),
            (
                "trust:\n  contradiction_penalty: -1\n",
                "trust.contradiction_penalty",
            ),
        ] {
            let err = HubConfig::parse(&format!(
                "listen: 127.0.0.1:0\nsecret: 0123456789abcdef0123456789abcdef\n{yaml}"
            ))
            .unwrap()
            .settings()
            .unwrap_err();
            assert!(err.to_string().contains(field), "{yaml}: {err}");
        }
        let err = HubConfig::parse(
            "listen: 127.0.0.1:0\nsecret: 0123456789abcdef0123456789abcdef\ntrust:\n  kk: 1\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("kk"), "{err}");
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        let err = HubConfig::parse("listen: 127.0.0.1:0\nsecrt: x\n").unwrap_err();
        assert!(err.to_string().contains("secrt"), "{err}");
        let err = HubConfig::parse("listen: 127.0.0.1:0\nsecret: short\n")
            .unwrap()
            .settings()
            .unwrap_err();
        assert!(err.to_string().contains("at least 32"), "{err}");
        let err = HubConfig::parse(
            "listen: 127.0.0.1:0\nsecret: 0123456789abcdef0123456789abcdef\npseudonym_epoch: 3 weeks\n",
        )
        .unwrap()
        .settings()
        .unwrap_err();
        assert!(err.to_string().contains("pseudonym_epoch"), "{err}");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
        assert!(parse_duration("7").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }
}
