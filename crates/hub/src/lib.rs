//! apiguard's hub: participants report threats to it, it normalises every report into the
//! canonical [`ThreatReport`](apiguard_model::threat::ThreatReport), replaces the reporter
//! with a pseudonym, scrubs identifiers and stores it as a sighting; once enough trusted
//! organisations reported an indicator it is promoted and fanned out to every other
//! participant's queue through RabbitMQ (or an in-process bus in embedded mode), and
//! withdrawn when it expires.
//!
//! ```text
//! REST ───┬► authenticate ──► validate ──► ingest queue (ack after the broker confirms)
//! gRPC ───┤
//! GraphQL ┘
//!                                              │
//!           worker: normalise ─► anonymise ─► de-duplicate ─► store sighting ─► trust:
//!                   k organisations weighed by trust within the window? ─► promotion
//!                                              │            (sweep: expiry ─► withdrawal)
//!                  feed log ─► topic exchange ─► one quorum queue per participant ─► feed
//!                           └► GraphQL feed query and subscription
//!                      store ─► pull views by cursor: REST, STIX 2.1, TAXII 2.1 (`views`)
//! ```
//!
//! Participants authenticate by API key, TLS client certificate, or both (`credentials`,
//! `tls`).
//!
//! See docs/hub.md.

#![forbid(unsafe_code)]

pub mod anonymise;
pub mod auth;
pub mod bus;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod db;
pub mod error;
pub mod feed;
pub mod graphql;
pub mod grpc;
pub mod ingest;
pub mod normalise;
pub mod pipeline;
pub mod rest;
pub mod stix;
pub mod store;
pub mod subscription;
pub mod taxii;
pub mod tls;
pub mod trust;
pub mod views;
pub mod ws;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

pub use config::{HubConfig, Settings};
pub use error::HubError;
pub use normalise::RawReport;
pub use store::{NewParticipant, Participant, Store};
pub use subscription::{AddressKind, Subscription};

use bus::{Bus, MemoryBus, RabbitBus};
use pipeline::Pipeline;

/// What every front door shares.
pub struct HubState {
    pub settings: Arc<Settings>,
    pub pipeline: Arc<Pipeline>,
    pub bus: Bus,
    /// Becomes true when the hub stops (long-lived connections close on it).
    pub stopping: watch::Receiver<bool>,
    /// Taken by subscription changes, so that two changes of one participant cannot
    /// interleave their bindings.
    subscription_changes: tokio::sync::Mutex<()>,
}

/// A running hub.
pub struct Hub {
    state: Arc<HubState>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Hub {
    /// Starts a hub from checked settings: opens the store, connects the bus, declares every
    /// participant's queue, starts the workers and the REST listener.
    pub async fn start(settings: Settings) -> Result<Hub, HubError> {
        let store = Store::connect(&settings.store).await?;
        Self::start_with_store(settings, store).await
    }

    /// Like [`Hub::start`] with a store opened by the caller.
    pub async fn start_with_store(settings: Settings, store: Store) -> Result<Hub, HubError> {
        let settings = Arc::new(settings);
        let (bus, workers) = match &settings.broker {
            Some(broker) => (
                Bus::Rabbit(Arc::new(RabbitBus::with_feed_lease(
                    broker.clone(),
                    settings.feed_lease,
                ))),
                broker.workers,
            ),
            None => (
                Bus::Memory(Arc::new(MemoryBus::with_feed_lease(
                    settings.limits.embedded_queue,
                    settings.feed_lease,
                ))),
                1,
            ),
        };
        for participant in store.participants().await? {
            bus.ensure_participant(&participant.id, &participant.subscription)
                .await?;
        }
        unbind_stale(&store, &bus).await;
        let pipeline = Arc::new(Pipeline::new(settings.clone(), store));
        let (stop, stopped) = watch::channel(false);
        let state = Arc::new(HubState {
            settings: settings.clone(),
            pipeline: pipeline.clone(),
            bus: bus.clone(),
            stopping: stopped.clone(),
            subscription_changes: tokio::sync::Mutex::new(()),
        });
        let mut tasks = bus.spawn_workers(pipeline.clone(), workers, stopped.clone());
        tasks.push(tokio::spawn(feed::run_sweeper(
            pipeline,
            bus.clone(),
            stopped.clone(),
        )));

        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .map_err(|e| HubError::Config(format!("cannot listen on {}: {e}", settings.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| HubError::Internal(e.to_string()))?;
        let router = rest::router(state.clone())
            .merge(grpc::router(state.clone()))
            .merge(views::router(state.clone()))
            .merge(taxii::router(state.clone()));
        let mut shutdown = stopped;
        let stop_serving = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        let make_service = router.into_make_service_with_connect_info::<tls::Peer>();
        let serving = match &settings.tls {
            None => tokio::spawn(async move {
                axum::serve(listener, make_service)
                    .with_graceful_shutdown(stop_serving)
                    .await
            }),
            Some(config) => {
                let listener = tls::TlsListener::new(listener, config.clone())
                    .map_err(|e| HubError::Internal(e.to_string()))?;
                tokio::spawn(async move {
                    axum::serve(listener, make_service)
                        .with_graceful_shutdown(stop_serving)
                        .await
                })
            }
        };
        tasks.push(tokio::spawn(async move {
            if let Ok(Err(error)) = serving.await {
                tracing::error!(%error, "the REST listener failed");
            }
        }));
        info!(
            rest = %addr,
            tls = settings.tls.is_some(),
            store = state.pipeline.store.kind(),
            bus = if settings.broker.is_some() { "rabbitmq" } else { "embedded" },
            "hub started"
        );
        Ok(Hub {
            state,
            addr,
            stop,
            tasks,
        })
    }

    /// Where the REST API listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state (store, bus, settings).
    pub fn state(&self) -> &Arc<HubState> {
        &self.state
    }

    /// Registers a participant; answers it and its first API key (shown only now).
    pub async fn register(&self, new: NewParticipant) -> Result<(Participant, String), HubError> {
        register_participant(&self.state, new).await
    }

    /// Changes a participant's subscription (see [`change_subscription`]).
    pub async fn change_subscription(
        &self,
        id: &str,
        subscription: &Subscription,
    ) -> Result<Participant, HubError> {
        change_subscription(&self.state, id, subscription).await
    }

    /// Stops the listener and the workers, then closes the bus and the store.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.state.bus.close().await;
        self.state.pipeline.store.close().await;
    }
}

/// Registers a participant authenticating by API key, stores the hash of a new key, and
/// declares its queue. (See [`credentials::register`] for certificates.)
pub async fn register_participant(
    state: &HubState,
    new: NewParticipant,
) -> Result<(Participant, String), HubError> {
    let (participant, key) =
        credentials::register(state, new, credentials::NewCredentials::default()).await?;
    let key = key.ok_or_else(|| HubError::Internal("an api_key participant got no key".into()))?;
    Ok((participant, key))
}

/// Changes a participant's subscription: in the store (it survives restarts), then on the
/// bus, binding the new keys before removing the old ones (see
/// [`RabbitBus::change_subscription`]). Answers the participant as changed. When the broker
/// fails half-way the store has the change and the error is returned: the new keys are
/// bound at the next reconnect (or feed call) and the old ones removed at the next change
/// or start, and the participant's feed already filters by the new subscription.
pub async fn change_subscription(
    state: &HubState,
    id: &str,
    subscription: &Subscription,
) -> Result<Participant, HubError> {
    let _serialised = state.subscription_changes.lock().await;
    let store = &state.pipeline.store;
    let (participant, stale) = store.set_subscription(id, subscription).await?;
    state.pipeline.remember(participant.clone());
    state
        .bus
        .change_subscription(&participant.id, subscription, &stale)
        .await?;
    store.unbound(&participant.id, &stale).await?;
    info!(participant = %participant.id, "subscription changed");
    Ok(participant)
}

/// Removes the bindings that earlier subscription changes could not remove then; what still
/// fails stays recorded for the next start.
async fn unbind_stale(store: &Store, bus: &Bus) {
    let stale = match store.stale_bindings().await {
        Ok(stale) => stale,
        Err(error) => {
            tracing::warn!(%error, "could not read the bindings left to remove");
            return;
        }
    };
    let mut by_participant: Vec<(String, Vec<String>)> = Vec::new();
    for (id, key) in stale {
        match by_participant.last_mut() {
            Some((last, keys)) if *last == id => keys.push(key),
            _ => by_participant.push((id, vec![key])),
        }
    }
    for (id, keys) in by_participant {
        let removed = match bus.unbind_stale(&id, &keys).await {
            Ok(()) => store.unbound(&id, &keys).await,
            Err(error) => Err(error),
        };
        if let Err(error) = removed {
            tracing::warn!(participant = %id, %error, "could not remove old subscription bindings; retrying at the next start");
        }
    }
}

/// `apiguard hub --config FILE`: runs the hub until SIGINT or SIGTERM.
pub async fn run(config: &Path) -> Result<(), HubError> {
    let settings = HubConfig::load(config)?.settings()?;
    let hub = Hub::start(settings).await?;
    wait_for_signal().await;
    info!("stopping");
    hub.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
