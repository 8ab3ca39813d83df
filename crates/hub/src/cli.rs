//! What `apiguard hub register`, `apiguard hub participants` and `apiguard hub participant
//! subscription` do: work on the hub's store directly, from its configuration file, with no
//! hub running.

use std::path::{Path, PathBuf};

use apiguard_model::threat::{AttackClass, IpPrefix, ThreatSeverity};

use crate::HubConfig;
use crate::bus::RabbitBus;
use crate::credentials::{AuthMode, CertMatch, NewCredentials, ParticipantCredentials};
use crate::error::HubError;
use crate::store::{NewParticipant, Participant, Store};
use crate::subscription::{AddressKind, Subscription};

/// The largest certificate file read.
const MAX_CERT_FILE: u64 = 1024 * 1024;

/// `apiguard hub register`'s options, as typed.
#[derive(Debug, Clone, Default)]
pub struct RegisterArgs {
    pub name: String,
    pub organisation: String,
    /// `--own-network CIDR`.
    pub own_networks: Vec<String>,
    /// `--own-host NAME`.
    pub own_hosts: Vec<String>,
    /// `--auth api_key|certificate|both`; default `both` with a certificate, else `api_key`.
    pub auth: Option<String>,
    /// `--cert FILE`: PEM certificates, pinned by their SHA-256.
    pub cert_files: Vec<PathBuf>,
    /// `--cert-sha256 HEX`.
    pub cert_sha256: Vec<String>,
    /// `--cert-subject "CN=..., O=..."`.
    pub cert_subjects: Vec<String>,
}

impl RegisterArgs {
    /// Checks the options into a participant and its credentials; errors name the option.
    pub fn check(&self) -> Result<(NewParticipant, NewCredentials), HubError> {
        let bad = |m: String| HubError::Invalid(m);
        let own_networks = self
            .own_networks
            .iter()
            .map(|n| {
                n.parse::<IpPrefix>()
                    .map_err(|e| bad(format!("--own-network {n}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut certs = Vec::new();
        for path in &self.cert_files {
            let shown = path.display();
            let size = std::fs::metadata(path)
                .map_err(|e| bad(format!("--cert {shown}: {e}")))?
                .len();
            if size > MAX_CERT_FILE {
                return Err(bad(format!(
                    "--cert {shown}: {size} bytes is not a certificate"
                )));
            }
            let pem = std::fs::read(path).map_err(|e| bad(format!("--cert {shown}: {e}")))?;
            let cert = crate::tls::client_cert_from_pem(&pem)
                .map_err(|e| bad(format!("--cert {shown}: {e}")))?;
            certs.push(CertMatch::Sha256(cert.sha256));
        }
        for hex in &self.cert_sha256 {
            certs.push(CertMatch::sha256(hex).map_err(|e| bad(format!("--cert-sha256: {e}")))?);
        }
        for subject in &self.cert_subjects {
            certs.push(
                CertMatch::subject(subject).map_err(|e| bad(format!("--cert-subject: {e}")))?,
            );
        }
        let mode = match &self.auth {
            Some(text) => text
                .parse::<AuthMode>()
                .map_err(|e| bad(format!("--auth: {e}")))?,
            None if certs.is_empty() => AuthMode::ApiKey,
            None => AuthMode::Both,
        };
        Ok((
            NewParticipant {
                name: self.name.clone(),
                organisation: self.organisation.clone(),
                own_networks,
                own_hosts: self.own_hosts.clone(),
                subscription: Default::default(),
            },
            NewCredentials { mode, certs },
        ))
    }
}

/// A registration made from the command line.
#[derive(Debug)]
pub struct Registered {
    pub participant: Participant,
    /// Its first API key (shown once), when its mode uses one.
    pub api_key: Option<String>,
    /// Why the participant's queue could not be declared on the broker now, if it could not
    /// (a hub declares it when it starts).
    pub queue_warning: Option<String>,
}

/// Registers a participant in the store the configuration names; with a broker, declares
/// its queue too, so a running hub delivers to it at once.
pub async fn register(config: &Path, args: &RegisterArgs) -> Result<Registered, HubError> {
    let (new, credentials) = args.check()?;
    let settings = HubConfig::load(config)?.settings()?;
    let store = Store::connect(&settings.store).await?;
    let registered = crate::credentials::register_in_store(&store, &new, &credentials).await;
    store.close().await;
    let (participant, api_key) = registered?;
    let queue_warning = match &settings.broker {
        None => None,
        Some(broker) => {
            let bus = RabbitBus::new(broker.clone());
            let declared = bus
                .ensure_participant(&participant.id, &participant.subscription)
                .await;
            bus.close().await;
            declared.err().map(|e| e.to_string())
        }
    };
    Ok(Registered {
        participant,
        api_key,
        queue_warning,
    })
}

/// Every participant in the store the configuration names, with its credentials.
pub async fn participants(config: &Path) -> Result<Vec<ParticipantCredentials>, HubError> {
    let settings = HubConfig::load(config)?.settings()?;
    let store = Store::connect(&settings.store).await?;
    let list = crate::credentials::list(&store).await;
    store.close().await;
    list
}

/// `apiguard hub participant subscription`'s filter options, as typed. Left out, a part of
/// the filter accepts everything.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionArgs {
    /// `--class NAME`: attack classes received.
    pub classes: Vec<String>,
    /// `--min-severity low|medium|high|critical`.
    pub min_severity: Option<String>,
    /// `--address-kind ip|prefix|none`.
    pub address_kinds: Vec<String>,
}

impl SubscriptionArgs {
    /// Checks the options into a subscription; errors name the option.
    pub fn check(&self) -> Result<Subscription, HubError> {
        let bad = |m: String| HubError::Invalid(m);
        let mut classes = Vec::new();
        for class in &self.classes {
            let class: AttackClass = class.parse().map_err(|e| bad(format!("--class: {e}")))?;
            if !classes.contains(&class) {
                classes.push(class);
            }
        }
        let min_severity = match &self.min_severity {
            Some(text) => text
                .parse::<ThreatSeverity>()
                .map_err(|e| bad(format!("--min-severity: {e}")))?,
            None => ThreatSeverity::Low,
        };
        let mut address_kinds = Vec::new();
        for kind in &self.address_kinds {
            let kind: AddressKind = kind
                .parse()
                .map_err(|e| bad(format!("--address-kind: {e}")))?;
            if !address_kinds.contains(&kind) {
                address_kinds.push(kind);
            }
        }
        Ok(Subscription {
            classes,
            min_severity,
            address_kinds,
        })
    }
}

/// A subscription changed from the command line.
#[derive(Debug)]
pub struct SubscriptionChanged {
    pub participant: Participant,
    /// Why the participant's queue could not be rebound on the broker now, if it could not:
    /// the change is stored, and the hub finishes it (new bindings at its next start or the
    /// participant's next feed call, old ones at its next start).
    pub broker_warning: Option<String>,
}

/// Changes the subscription of the participant named `who` (its name or id) in the store the
/// configuration names; with a broker, rebinds its queue too (new keys first, then the old
/// ones removed), so a running hub delivers by the new filter at once.
pub async fn set_subscription(
    config: &Path,
    who: &str,
    args: &SubscriptionArgs,
) -> Result<SubscriptionChanged, HubError> {
    let subscription = args.check()?;
    let settings = HubConfig::load(config)?.settings()?;
    let store = Store::connect(&settings.store).await?;
    let result = change_in_store(&store, &settings, who, &subscription).await;
    store.close().await;
    result
}

async fn change_in_store(
    store: &Store,
    settings: &crate::Settings,
    who: &str,
    subscription: &Subscription,
) -> Result<SubscriptionChanged, HubError> {
    let participants = store.participants().await?;
    let Some(found) = participants.iter().find(|p| p.name == who || p.id == who) else {
        return Err(HubError::NotFound(format!(
            "no participant named `{}` (see `apiguard hub participants`)",
            who.chars().take(64).collect::<String>()
        )));
    };
    let (participant, stale) = store.set_subscription(&found.id, subscription).await?;
    let broker_warning = match &settings.broker {
        None => None,
        Some(broker) => {
            let bus = RabbitBus::new(broker.clone());
            let rebound = bus
                .change_subscription(&participant.id, subscription, &stale)
                .await;
            bus.close().await;
            match rebound {
                Ok(()) => {
                    store.unbound(&participant.id, &stale).await?;
                    None
                }
                Err(error) => Some(error.to_string()),
            }
        }
    };
    Ok(SubscriptionChanged {
        participant,
        broker_warning,
    })
}
