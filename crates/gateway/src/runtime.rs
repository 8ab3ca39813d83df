//! The running gateway: binds listeners, swaps configurations, keeps their history, drains
//! on shutdown.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use apiguard_model::event::now_ms;
use apiguard_model::{EventKind, SecurityEvent};
use apiguard_policy::authz::Grants;
use apiguard_policy::{AuthnRuntime, IntegrityRuntime, RateLimits};
use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, watch};

use crate::enforcement::Enforcement;
use crate::listener::{self, Drain};
use crate::load::{ConfigError, Problem, read_config};
use crate::metrics::Metrics;
use crate::proxy::Shared;
use crate::sharing::HubLink;
use crate::snapshot::{CompileEnv, Snapshot, compile, content_hash};

/// One applied configuration version, kept for inspection and rollback.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigVersion {
    pub version: u64,
    /// SHA-256 of the file content.
    pub hash: String,
    pub applied_at_ms: u64,
    /// What applied it: `startup`, `sighup`, `file_change`, `admin`, `rollback by <who>`.
    pub trigger: String,
    /// Served long enough without an error incident (self-healing marks it): a rollback
    /// target.
    pub known_good: bool,
    #[serde(skip)]
    pub text: Arc<str>,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// A started gateway.
pub struct Gateway {
    shared: Arc<Shared>,
    config_path: PathBuf,
    versions: Mutex<VecDeque<ConfigVersion>>,
    /// Serialises reloads (SIGHUP, file watch and admin may race).
    reload_lock: Mutex<()>,
    last_rejected_hash: Mutex<Option<String>>,
    shutdown: watch::Sender<bool>,
    alive: Mutex<Option<mpsc::Sender<()>>>,
    all_done: tokio::sync::Mutex<mpsc::Receiver<()>>,
    listen_addrs: Vec<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    workers: usize,
    /// The reporter and subscriber of the `hub:` section, when there is one.
    hub: Mutex<Option<HubLink>>,
    /// Where the behaviour baselines are persisted (`behavior.persist_path`, read at start).
    behavior_file: Option<PathBuf>,
    /// Self-healing: the engine, its persisted state, circuits and client ledger.
    heal: Arc<crate::heal::HealHandle>,
}

impl Gateway {
    /// Loads the configuration, binds every listener and the admin endpoint, and starts
    /// serving on the current runtime. Addresses with port 0 get a free port (see
    /// [`Gateway::listen_addrs`]).
    pub async fn start(config_path: &Path) -> Result<Arc<Gateway>, StartError> {
        Self::start_on(config_path, &[tokio::runtime::Handle::current()]).await
    }

    /// Like [`Gateway::start`], with traffic served by `workers`: the calling runtime accepts
    /// and hands each connection to the worker with the fewest open ones; each worker keeps its
    /// own upstream connections. Call it from the control runtime, with worker threads marked
    /// with [`crate::worker::set_current`] in `workers` order.
    pub async fn start_on(
        config_path: &Path,
        workers: &[tokio::runtime::Handle],
    ) -> Result<Arc<Gateway>, StartError> {
        let file = config_path.display().to_string();
        let (config, text) = read_config(config_path)?;
        let metrics = Arc::new(Metrics::new());
        let (events, _) = broadcast::channel(4096);
        let worker_count = workers.len().max(1);
        let enforcement = Arc::new(Enforcement::new());
        let behavior = Arc::new(apiguard_behavior::Behavior::new(crate::behavior::limits(
            &config,
        )));
        let behavior_file = crate::behavior::persistence(&config);
        if let Some((path, _)) = &behavior_file {
            match behavior.load(path) {
                Ok(loaded) => {
                    tracing::info!(file = %path.display(), endpoints = loaded, "behaviour baselines loaded")
                }
                Err(error) => {
                    tracing::warn!(%error, "behaviour baselines not loaded: learning starts afresh")
                }
            }
        }
        let authn = AuthnRuntime::new(metrics.authn.clone());
        let rate_limits = RateLimits::new(metrics.rate_limits.clone());
        let grants = Arc::new(Grants::default());
        let integrity = IntegrityRuntime::new(
            config.signatures.replay_cache_size,
            metrics.integrity.clone(),
        );
        let env = CompileEnv {
            events: events.clone(),
            metrics: metrics.clone(),
            workers: worker_count,
            previous: None,
            enforcement: enforcement.clone(),
            behavior: behavior.clone(),
            authn: authn.clone(),
            rate_limits: rate_limits.clone(),
            grants: grants.clone(),
            integrity: integrity.clone(),
        };
        let snapshot = compile(&config, &file, &text, 1, &env)?;
        apply_policy(&snapshot, &authn, &rate_limits);
        metrics.config_version.set(1);

        // One socket per listener, accepted on this (control) runtime, which hands each
        // connection to the least-loaded worker when there are several.
        let worker_set = (workers.len() > 1).then(|| listener::WorkerSet::new(workers, &metrics));
        let local_worker = workers.first().cloned();
        let mut bound: Vec<tokio::net::TcpListener> = Vec::new();
        let mut listen_addrs = Vec::new();
        for settings in &snapshot.listeners {
            let address = settings.address;
            // A single worker accepts on its own runtime; the socket registers with it.
            let _context = local_worker
                .as_ref()
                .filter(|_| worker_set.is_none())
                .map(|handle| handle.enter());
            let socket =
                listener::bind(address).map_err(|source| StartError::Bind { address, source })?;
            listen_addrs.push(socket.local_addr().unwrap_or(address));
            bound.push(socket);
        }
        let admin_socket = match snapshot.admin {
            Some(address) => Some(
                listener::bind(address).map_err(|source| StartError::Bind { address, source })?,
            ),
            None => None,
        };
        let admin_addr = admin_socket.as_ref().and_then(|s| s.local_addr().ok());

        let versions = VecDeque::from([ConfigVersion {
            version: 1,
            hash: snapshot.hash.clone(),
            applied_at_ms: now_ms(),
            trigger: "startup".into(),
            known_good: false,
            text: text.into(),
        }]);
        let watch_config = snapshot.reload.clone();
        let listener_settings = snapshot.listeners.clone();
        let heal = Arc::new(crate::heal::HealHandle::new(
            &snapshot.heal,
            &metrics.registry,
        ));
        heal.restore(&enforcement);
        let unrouted = crate::metrics::RouteMetrics::new(&metrics, "-");
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
            events,
            unrouted,
            enforcement,
            behavior,
            authn,
            rate_limits,
            grants,
            heal: heal.state.clone(),
            integrity,
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (alive, all_done) = mpsc::channel(1);
        let gateway = Arc::new(Gateway {
            shared: shared.clone(),
            config_path: config_path.to_owned(),
            versions: Mutex::new(versions),
            reload_lock: Mutex::new(()),
            last_rejected_hash: Mutex::new(None),
            shutdown,
            alive: Mutex::new(Some(alive.clone())),
            all_done: tokio::sync::Mutex::new(all_done),
            listen_addrs: listen_addrs.clone(),
            admin_addr,
            workers: worker_count,
            hub: Mutex::new(None),
            behavior_file: behavior_file.as_ref().map(|(path, _)| path.clone()),
            heal,
        });
        gateway.relink_hub(&gateway.snapshot());

        for ((socket, settings), address) in
            bound.into_iter().zip(listener_settings).zip(&listen_addrs)
        {
            tracing::info!(listener = %settings.name, %address, tls = settings.tls.is_some(), workers = worker_count, "listening");
            let drain = Drain {
                shutdown: shutdown_rx.clone(),
                alive: alive.clone(),
            };
            let serve = listener::serve(
                socket,
                settings.clone(),
                shared.clone(),
                drain,
                worker_set.clone(),
            );
            match (&worker_set, &local_worker) {
                (None, Some(handle)) => {
                    handle.spawn(serve);
                }
                _ => {
                    tokio::spawn(serve);
                }
            }
        }
        if let Some(socket) = admin_socket {
            if let Some(address) = admin_addr {
                tracing::info!(%address, "admin listening");
            }
            tokio::spawn(crate::admin::serve(socket, gateway.clone()));
        }
        tokio::spawn(expire_block_rules(
            Arc::downgrade(&shared),
            shutdown_rx.clone(),
        ));
        if let Some((path, interval)) = behavior_file {
            tokio::spawn(persist_baselines(
                Arc::downgrade(&shared),
                path,
                interval,
                shutdown_rx.clone(),
            ));
        }
        crate::heal::start(&gateway, shutdown_rx.clone());
        if watch_config.watch {
            tokio::spawn(watch_file(
                Arc::downgrade(&gateway),
                watch_config.watch_interval.0,
                shutdown_rx.clone(),
            ));
        }
        Ok(gateway)
    }

    /// The bound addresses of the traffic listeners, in configuration order.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listen_addrs
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Starts, restarts or stops the hub link to match `snapshot`'s `hub:` section.
    fn relink_hub(&self, snapshot: &Snapshot) {
        let mut link = self.hub.lock().unwrap_or_else(|e| e.into_inner());
        if link.as_ref().map(|l| &l.settings) == snapshot.hub.as_ref() {
            return;
        }
        *link = None;
        if let Some(settings) = snapshot.hub.clone() {
            match crate::sharing::start(
                settings,
                &self.shared.events,
                self.shared.enforcement.clone(),
                self.shared.metrics.clone(),
            ) {
                Ok(started) => *link = Some(started),
                Err(error) => {
                    tracing::error!(%error, "cannot open the hub outbox; threat sharing is off")
                }
            }
        }
    }

    /// Self-healing: incidents, actions, circuits.
    pub fn heal(&self) -> &crate::heal::HealHandle {
        &self.heal
    }

    /// The learned behaviour state.
    pub fn behavior(&self) -> &Arc<apiguard_behavior::Behavior> {
        &self.shared.behavior
    }

    /// The block table (admin API, hub subscriber, self-healing).
    pub fn enforcement(&self) -> &Arc<Enforcement> {
        &self.shared.enforcement
    }

    /// Just-in-time authorisation grants (admin API).
    pub fn grants(&self) -> &Arc<Grants> {
        &self.shared.grants
    }

    /// The security event stream.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<SecurityEvent>> {
        self.shared.events.subscribe()
    }

    /// The configuration in effect.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot.load_full()
    }

    /// Applied versions, oldest first.
    pub fn versions(&self) -> Vec<ConfigVersion> {
        self.versions
            .lock()
            .expect("versions lock")
            .iter()
            .cloned()
            .collect()
    }

    /// Marks `version` as known good (self-healing does when it served well long enough);
    /// whether it is still kept.
    pub fn mark_known_good(&self, version: u64) -> bool {
        let mut versions = self.versions.lock().expect("versions lock");
        match versions.iter_mut().find(|v| v.version == version) {
            Some(v) => {
                if !v.known_good {
                    v.known_good = true;
                    tracing::info!(version, "configuration version marked known good");
                }
                true
            }
            None => false,
        }
    }

    /// The newest known good version still kept.
    pub fn last_known_good(&self) -> Option<u64> {
        let versions = self.versions.lock().expect("versions lock");
        versions
            .iter()
            .rev()
            .find(|v| v.known_good)
            .map(|v| v.version)
    }

    /// Re-applies the text of a kept `version` as a new version (numbers only grow), and
    /// returns that version. The file on disk is left as it is: its content is remembered as
    /// rejected, so the file watcher does not apply it again until it changes.
    pub fn rollback_to(&self, version: u64, by: &str) -> Result<u64, String> {
        let kept = {
            let versions = self.versions.lock().expect("versions lock");
            versions.iter().find(|v| v.version == version).cloned()
        };
        let Some(kept) = kept else {
            return Err(format!(
                "version {version} is not kept (reload.keep_versions keeps the last ones)"
            ));
        };
        let file = format!("{} (version {version})", self.config_path.display());
        let config = crate::load::parse_config(&kept.text)
            .map_err(|p| format!("version {version} no longer parses: {}", p.message))?;
        let on_disk = std::fs::read_to_string(&self.config_path)
            .ok()
            .map(|text| content_hash(&text));
        let applied = self
            .apply(&config, &kept.text, &file, &format!("rollback by {by}"))
            .map_err(|e| e.to_string())?;
        if kept.known_good {
            self.mark_known_good(applied);
        }
        if let Some(hash) = on_disk.filter(|h| *h != kept.hash) {
            *self.last_rejected_hash.lock().expect("lock") = Some(hash);
        }
        tracing::warn!(target: "apiguard::security", from = version, to = applied, by, "configuration rolled back");
        Ok(applied)
    }

    pub fn is_draining(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Re-reads the configuration file; a bad file is rejected and the running configuration
    /// keeps serving. Returns the new version number.
    pub fn reload(&self, trigger: &str) -> Result<u64, ConfigError> {
        let file = self.config_path.display().to_string();
        let result = read_config(&self.config_path)
            .and_then(|(config, text)| self.apply(&config, &text, &file, trigger));
        match &result {
            Ok(version) => tracing::info!(version, trigger, "configuration applied"),
            Err(error) => {
                self.shared
                    .metrics
                    .config_reloads
                    .with_label_values(&["rejected"])
                    .inc();
                tracing::error!(trigger, error = %error, "configuration rejected; the previous one keeps serving");
                let _ = self.shared.events.send(Arc::new(SecurityEvent::system(
                    EventKind::ConfigRejected {
                        reason: error.to_string(),
                    },
                )));
            }
        }
        result
    }

    fn apply(
        &self,
        config: &crate::config::Config,
        text: &str,
        file: &str,
        trigger: &str,
    ) -> Result<u64, ConfigError> {
        let _serial = self.reload_lock.lock().expect("reload lock");
        let current = self.shared.snapshot.load_full();
        let version = current.version + 1;
        let env = CompileEnv {
            events: self.shared.events.clone(),
            metrics: self.shared.metrics.clone(),
            workers: self.workers,
            previous: Some(&current),
            enforcement: self.shared.enforcement.clone(),
            behavior: self.shared.behavior.clone(),
            authn: self.shared.authn.clone(),
            rate_limits: self.shared.rate_limits.clone(),
            grants: self.shared.grants.clone(),
            integrity: self.shared.integrity.clone(),
        };
        let snapshot = compile(config, file, text, version, &env)?;
        let fixed = |s: &Snapshot| {
            let listeners: Vec<_> = s
                .listeners
                .iter()
                .map(|l| (l.address, l.max_connections, l.name.clone()))
                .collect();
            (listeners, s.admin, s.reload.watch, s.reload.watch_interval)
        };
        if fixed(&snapshot) != fixed(&current) {
            tracing::warn!(
                "listener addresses, names or max_connections, the admin address, or reload.watch settings changed: they take effect at the next restart; everything else applies now"
            );
        }
        // Targets and pools that are gone stop being reported.
        for (name, pool) in &current.pools {
            for target in &pool.targets {
                let still_there = snapshot
                    .pools
                    .get(name)
                    .is_some_and(|p| p.targets.iter().any(|t| t.address == target.address));
                if !still_there {
                    let _ = self
                        .shared
                        .metrics
                        .upstream_healthy
                        .remove_label_values(&[name, &target.address]);
                }
            }
        }
        let hash = snapshot.hash.clone();
        let snapshot = Arc::new(snapshot);
        self.shared.snapshot.store(snapshot.clone());
        apply_policy(&snapshot, &self.shared.authn, &self.shared.rate_limits);
        self.relink_hub(&snapshot);
        self.shared.metrics.config_version.set(version as i64);
        self.shared
            .metrics
            .config_reloads
            .with_label_values(&["applied"])
            .inc();
        {
            let mut versions = self.versions.lock().expect("versions lock");
            versions.push_back(ConfigVersion {
                version,
                hash: hash.clone(),
                applied_at_ms: now_ms(),
                trigger: trigger.to_owned(),
                known_good: false,
                text: text.into(),
            });
            let keep = current.reload.keep_versions.max(1);
            while versions.len() > keep {
                versions.pop_front();
            }
        }
        let _ =
            self.shared
                .events
                .send(Arc::new(SecurityEvent::system(EventKind::ConfigApplied {
                    version,
                    hash,
                })));
        Ok(version)
    }

    /// Stops accepting, lets in-flight requests finish for up to `drain_timeout`, then
    /// returns (connections still open are dropped with the runtime).
    pub async fn shutdown(&self) {
        let drain_timeout = self.shared.snapshot.load().reload.drain_timeout.0;
        let _ = self.shutdown.send(true);
        drop(self.alive.lock().expect("alive lock").take());
        let mut all_done = self.all_done.lock().await;
        match tokio::time::timeout(drain_timeout, all_done.recv()).await {
            Ok(_) => tracing::info!("drained: every connection finished"),
            Err(_) => tracing::warn!(
                ?drain_timeout,
                "drain timeout: closing the remaining connections"
            ),
        }
        self.save_baselines();
        self.heal.save();
    }

    /// Writes the behaviour baselines to `behavior.persist_path`, if set (also done
    /// periodically and at shutdown).
    pub fn save_baselines(&self) {
        if let Some(path) = &self.behavior_file {
            save_baselines(&self.shared, path);
        }
    }

    /// Serves until SIGTERM or SIGINT (then drains), reloading on SIGHUP.
    pub async fn run_until_signalled(self: &Arc<Self>) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = signal(SignalKind::hangup())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        loop {
            tokio::select! {
                _ = hangup.recv() => {
                    let _ = self.reload("sighup");
                }
                _ = terminate.recv() => break,
                _ = interrupt.recv() => break,
            }
        }
        tracing::info!("shutting down: no new connections, draining");
        self.shutdown().await;
        Ok(())
    }
}

/// Applies the settings of the policy state that outlives snapshots: continuous verification
/// and rate-limit cluster mode.
fn apply_policy(snapshot: &Snapshot, authn: &AuthnRuntime, rate_limits: &RateLimits) {
    authn.continuous().configure(snapshot.continuous.clone());
    rate_limits.configure_cluster(snapshot.rate_limit_cluster.clone());
}

/// Reloads when the file's content changes. Polling the content hash (not inotify) also
/// catches Kubernetes ConfigMap updates, which swap a symlink rather than write the file.
async fn watch_file(
    gateway: std::sync::Weak<Gateway>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        let Some(gateway) = gateway.upgrade() else {
            return;
        };
        let Ok(text) = tokio::fs::read_to_string(&gateway.config_path).await else {
            continue;
        };
        let hash = content_hash(&text);
        let current = gateway.shared.snapshot.load().hash.clone();
        let already_rejected =
            gateway.last_rejected_hash.lock().expect("lock").as_deref() == Some(hash.as_str());
        if hash == current || already_rejected {
            continue;
        }
        match gateway.reload("file_change") {
            Ok(_) => *gateway.last_rejected_hash.lock().expect("lock") = None,
            Err(_) => *gateway.last_rejected_hash.lock().expect("lock") = Some(hash),
        }
    }
}

/// Checks a configuration file as `apiguard validate` does: parse, then every semantic check.
pub fn validate_file(path: &Path) -> Result<(), ConfigError> {
    let file = path.display().to_string();
    let (config, _) = read_config(path)?;
    let problems: Vec<Problem> = crate::snapshot::check(&config);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError { file, problems })
    }
}

/// Writes the behaviour baselines to their file now.
fn save_baselines(shared: &Shared, path: &Path) {
    match shared.behavior.save(path) {
        Ok(endpoints) => {
            tracing::debug!(file = %path.display(), endpoints, "behaviour baselines saved")
        }
        Err(error) => tracing::warn!(%error, "behaviour baselines not saved"),
    }
}

/// Writes the behaviour baselines every `interval` until shutdown.
async fn persist_baselines(
    shared: Weak<Shared>,
    path: PathBuf,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        // Serialising thousands of endpoints is blocking work: keep it off the reactor.
        let _ = tokio::task::spawn_blocking({
            let path = path.clone();
            move || save_baselines(&shared, &path)
        })
        .await;
    }
}

/// Drops expired block rules, watch rules and just-in-time grants every second (grants are
/// audited as they expire) and keeps the rule gauge current.
async fn expire_block_rules(shared: Weak<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = now_ms();
        for rule in shared.enforcement.purge_expired(now) {
            tracing::info!(target: "apiguard::security", rule = %rule.target, source = %rule.source, "block rule expired");
        }
        for rule in shared.enforcement.purge_expired_watch(now) {
            tracing::debug!(target: "apiguard::security", rule = %rule.target, source = %rule.source, "watch rule expired");
        }
        shared.grants.purge_expired(now);
        shared
            .metrics
            .block_rules
            .set(shared.enforcement.rules().len() as i64);
    }
}
