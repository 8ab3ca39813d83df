//! What `apiguard hub register` and `apiguard hub participants` do: work on the hub's store
//! directly, from its configuration file, with no hub running.

use std::path::{Path, PathBuf};

use apiguard_model::threat::IpPrefix;

use crate::HubConfig;
use crate::bus::RabbitBus;
use crate::credentials::{AuthMode, CertMatch, NewCredentials, ParticipantCredentials};
use crate::error::HubError;
use crate::store::{NewParticipant, Participant, Store};

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
