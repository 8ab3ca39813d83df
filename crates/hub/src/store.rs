//! The hub's store: the participant registry (participants and hashed API keys) and the
//! reports, on SQLite (default, embedded) or PostgreSQL (by URL). The SQL is written once:
//! both accept `$1` parameters; only the table definitions differ.

use std::str::FromStr;
use std::time::Duration;

use apiguard_model::threat::IpPrefix;
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use uuid::Uuid;

use crate::db::Arg;
use crate::error::HubError;
use crate::subscription::Subscription;

/// A registered participant: one organisation.
#[derive(Debug, Clone, PartialEq)]
pub struct Participant {
    /// The hub's id for it (a UUID). Never leaves the hub.
    pub id: String,
    /// A unique short name.
    pub name: String,
    /// The organisation's name.
    pub organisation: String,
    /// The participant's own networks: never shared as indicators, scrubbed from text.
    pub own_networks: Vec<IpPrefix>,
    /// The participant's own host names, scrubbed from everything it reports.
    pub own_hosts: Vec<String>,
    /// What it receives.
    pub subscription: Subscription,
}

/// What registering a participant needs.
#[derive(Debug, Clone, Default)]
pub struct NewParticipant {
    pub name: String,
    pub organisation: String,
    pub own_networks: Vec<IpPrefix>,
    pub own_hosts: Vec<String>,
    pub subscription: Subscription,
}

/// A report as stored.
#[derive(Debug, Clone)]
pub struct StoredReport {
    pub id: Uuid,
    pub participant_id: String,
    pub ip: Option<String>,
    pub class: String,
    pub severity: String,
    pub received_at_ms: i64,
    pub valid_until_ms: i64,
    /// The canonical, anonymised report (JSON).
    pub body: String,
}

/// SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

const SQLITE_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS hub_participants (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, \
     organisation TEXT NOT NULL, own_networks TEXT NOT NULL, own_hosts TEXT NOT NULL, \
     subscription TEXT NOT NULL, created_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS hub_api_keys (key_hash TEXT PRIMARY KEY, \
     participant_id TEXT NOT NULL REFERENCES hub_participants(id), created_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS hub_reports (seq INTEGER PRIMARY KEY AUTOINCREMENT, \
     id TEXT NOT NULL UNIQUE, participant_id TEXT NOT NULL, ip TEXT, class TEXT NOT NULL, \
     severity TEXT NOT NULL, received_at BIGINT NOT NULL, valid_until BIGINT NOT NULL, \
     body TEXT NOT NULL, published BIGINT NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS hub_reports_ip ON hub_reports (ip, received_at)",
    STALE_BINDINGS_SCHEMA,
];

const POSTGRES_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS hub_participants (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, \
     organisation TEXT NOT NULL, own_networks TEXT NOT NULL, own_hosts TEXT NOT NULL, \
     subscription TEXT NOT NULL, created_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS hub_api_keys (key_hash TEXT PRIMARY KEY, \
     participant_id TEXT NOT NULL REFERENCES hub_participants(id), created_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS hub_reports (seq BIGSERIAL PRIMARY KEY, \
     id TEXT NOT NULL UNIQUE, participant_id TEXT NOT NULL, ip TEXT, class TEXT NOT NULL, \
     severity TEXT NOT NULL, received_at BIGINT NOT NULL, valid_until BIGINT NOT NULL, \
     body TEXT NOT NULL, published BIGINT NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS hub_reports_ip ON hub_reports (ip, received_at)",
    STALE_BINDINGS_SCHEMA,
];

/// Binding keys a participant's queue must lose: those of its earlier subscriptions, kept
/// until the broker confirmed the unbinding, so that a change made while the broker was
/// away (or by the command line with no broker reachable) is finished later.
const STALE_BINDINGS_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS hub_stale_bindings \
     (participant_id TEXT NOT NULL, binding TEXT NOT NULL, PRIMARY KEY (participant_id, binding))";

/// Runs a statement on whichever pool, returning rows affected.
macro_rules! execute {
    ($store:expr, $sql:expr $(, $bind:expr)* $(,)?) => {
        match $store {
            Store::Sqlite(pool) => sqlx::query($sql)$(.bind($bind))*.execute(pool).await.map(|r| r.rows_affected()),
            Store::Postgres(pool) => sqlx::query($sql)$(.bind($bind))*.execute(pool).await.map(|r| r.rows_affected()),
        }
    };
}

/// Fetches all rows and maps each with `$map` (an expression over `$row` giving
/// `Result<T, sqlx::Error>`).
macro_rules! fetch_all {
    ($store:expr, $sql:expr, [$($bind:expr),*], |$row:ident| $map:expr) => {
        match $store {
            Store::Sqlite(pool) => {
                let rows = sqlx::query($sql)$(.bind($bind))*.fetch_all(pool).await?;
                rows.iter().map(|$row| $map).collect::<Result<Vec<_>, sqlx::Error>>()
            }
            Store::Postgres(pool) => {
                let rows = sqlx::query($sql)$(.bind($bind))*.fetch_all(pool).await?;
                rows.iter().map(|$row| $map).collect::<Result<Vec<_>, sqlx::Error>>()
            }
        }
    };
}

pub(crate) type ParticipantRow = (String, String, String, String, String, String);

pub(crate) fn participant_from_row(row: ParticipantRow) -> Result<Participant, HubError> {
    let (id, name, organisation, networks, hosts, subscription) = row;
    let corrupt =
        |what: &str, e: String| HubError::Store(format!("participant {id}: bad {what}: {e}"));
    let networks: Vec<String> =
        serde_json::from_str(&networks).map_err(|e| corrupt("own_networks", e.to_string()))?;
    let own_networks = networks
        .iter()
        .map(|n| n.parse::<IpPrefix>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| corrupt("own_networks", e))?;
    let own_hosts: Vec<String> =
        serde_json::from_str(&hosts).map_err(|e| corrupt("own_hosts", e.to_string()))?;
    let subscription: Subscription =
        serde_json::from_str(&subscription).map_err(|e| corrupt("subscription", e.to_string()))?;
    Ok(Participant {
        id,
        name,
        organisation,
        own_networks,
        own_hosts,
        subscription,
    })
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Store {
    /// Opens (creating when missing) the store at `url` and creates its tables.
    pub async fn connect(url: &str) -> Result<Store, HubError> {
        let store = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| HubError::Config(format!("store `{url}`: {e}")))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // WAL with NORMAL: a commit survives a crash of the process (not of the
                // machine) without an fsync per report; measured 4x the worker throughput.
                .synchronous(SqliteSynchronous::Normal)
                // 32 MiB of page cache per connection (the default is 2 MiB): a worker's
                // batch touches the indexes of five tables, and with the default the pages
                // came back from the kernel by a read each (profiled: a sixth of the
                // writer's time was in the kernel).
                .pragma("cache_size", "-32768")
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true);
            // An in-memory database lives as long as its one connection.
            let max = if url.contains(":memory:") { 1 } else { 4 };
            let pool = SqlitePoolOptions::new()
                .max_connections(max)
                .min_connections(if max == 1 { 1 } else { 0 })
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(options)
                .await
                .map_err(|e| HubError::Store(format!("cannot open `{url}`: {e}")))?;
            Store::Sqlite(pool)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)
                .map_err(|e| HubError::Config(format!("store: {e}")))?;
            Self::connect_postgres(options).await?
        } else {
            return Err(HubError::Config(
                "store: use sqlite://PATH, sqlite::memory: or postgres://...".to_owned(),
            ));
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Opens a PostgreSQL store with explicit options (tests use a schema of their own).
    pub async fn connect_postgres(options: PgConnectOptions) -> Result<Store, HubError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|e| HubError::Store(format!("cannot connect to PostgreSQL: {e}")))?;
        let store = Store::Postgres(pool);
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), HubError> {
        let statements = match self {
            Store::Sqlite(_) => SQLITE_SCHEMA,
            Store::Postgres(_) => POSTGRES_SCHEMA,
        };
        for statement in statements {
            execute!(self, *statement)?;
        }
        crate::credentials::migrate(self).await?;
        crate::views::migrate(self).await?;
        self.migrate_feed().await?;
        crate::views::backfill_legacy_feed(self).await
    }

    /// Which database this is, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// Registers a participant. Its name must be unique.
    pub async fn add_participant(&self, new: &NewParticipant) -> Result<Participant, HubError> {
        let name = new.name.trim();
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(HubError::Invalid(
                "name: 1 to 64 letters, digits, `-`, `_` or `.`".to_owned(),
            ));
        }
        if new.organisation.trim().is_empty() || new.organisation.len() > 256 {
            return Err(HubError::Invalid(
                "organisation: 1 to 256 characters".to_owned(),
            ));
        }
        if new.own_networks.len() > 1024 || new.own_hosts.len() > 1024 {
            return Err(HubError::Invalid(
                "at most 1024 own networks and 1024 own hosts".to_owned(),
            ));
        }
        new.subscription.validate().map_err(HubError::Invalid)?;
        let participant = Participant {
            id: Uuid::now_v7().to_string(),
            name: name.to_owned(),
            organisation: new.organisation.trim().to_owned(),
            own_networks: new.own_networks.clone(),
            own_hosts: new.own_hosts.iter().map(|h| h.trim().to_owned()).collect(),
            subscription: new.subscription.clone(),
        };
        let networks: Vec<String> = participant
            .own_networks
            .iter()
            .map(ToString::to_string)
            .collect();
        let result = execute!(
            self,
            "INSERT INTO hub_participants (id, name, organisation, own_networks, own_hosts, subscription, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &participant.id,
            &participant.name,
            &participant.organisation,
            json(&networks),
            json(&participant.own_hosts),
            json(&participant.subscription),
            now_ms(),
        );
        match result {
            Ok(_) => Ok(participant),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(HubError::Conflict(
                format!("a participant named `{}` exists", participant.name),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Stores the hash of a new API key for a participant.
    pub async fn add_api_key(&self, participant_id: &str, key_hash: &str) -> Result<(), HubError> {
        execute!(
            self,
            "INSERT INTO hub_api_keys (key_hash, participant_id, created_at) VALUES ($1, $2, $3)",
            key_hash,
            participant_id,
            now_ms(),
        )?;
        Ok(())
    }

    /// The participant owning the key with this hash.
    pub async fn participant_by_key_hash(
        &self,
        key_hash: &str,
    ) -> Result<Option<Participant>, HubError> {
        let rows = fetch_all!(
            self,
            "SELECT p.id, p.name, p.organisation, p.own_networks, p.own_hosts, p.subscription \
             FROM hub_api_keys k JOIN hub_participants p ON p.id = k.participant_id WHERE k.key_hash = $1",
            [key_hash],
            |row| participant_row(row)
        )?;
        rows.into_iter()
            .next()
            .map(participant_from_row)
            .transpose()
    }

    /// The participant with this id.
    pub async fn participant(&self, id: &str) -> Result<Option<Participant>, HubError> {
        let rows = fetch_all!(
            self,
            "SELECT p.id, p.name, p.organisation, p.own_networks, p.own_hosts, p.subscription \
             FROM hub_participants p WHERE p.id = $1",
            [id],
            |row| participant_row(row)
        )?;
        rows.into_iter()
            .next()
            .map(participant_from_row)
            .transpose()
    }

    /// Every participant, oldest first.
    pub async fn participants(&self) -> Result<Vec<Participant>, HubError> {
        let rows = fetch_all!(
            self,
            "SELECT p.id, p.name, p.organisation, p.own_networks, p.own_hosts, p.subscription \
             FROM hub_participants p ORDER BY p.created_at, p.id",
            [],
            |row| participant_row(row)
        )?;
        rows.into_iter().map(participant_from_row).collect()
    }

    /// Replaces a participant's subscription. Answers the participant as changed and the
    /// binding keys its queue must now lose: those of the old subscription the new one does
    /// not use, with any left over from earlier changes (see [`Store::unbound`]).
    pub async fn set_subscription(
        &self,
        id: &str,
        subscription: &Subscription,
    ) -> Result<(Participant, Vec<String>), HubError> {
        subscription.validate().map_err(HubError::Invalid)?;
        let mut tx = self.begin().await?;
        let rows = tx
            .fetch(
                "SELECT id, name, organisation, own_networks, own_hosts, subscription \
                 FROM hub_participants WHERE id = $1",
                &[Arg::Text(id)],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Err(HubError::NotFound(format!("no participant `{id}`")));
        };
        let mut participant = participant_from_row((
            row.text(0)?,
            row.text(1)?,
            row.text(2)?,
            row.text(3)?,
            row.text(4)?,
            row.text(5)?,
        ))?;
        let wanted = subscription.binding_keys();
        for key in participant.subscription.binding_keys() {
            if !wanted.contains(&key) {
                tx.exec(
                    "INSERT INTO hub_stale_bindings (participant_id, binding) VALUES ($1, $2) \
                     ON CONFLICT (participant_id, binding) DO NOTHING",
                    &[Arg::Text(id), Arg::Text(&key)],
                )
                .await?;
            }
        }
        // A key wanted again must not be unbound by what an earlier change left over.
        for key in &wanted {
            tx.exec(
                "DELETE FROM hub_stale_bindings WHERE participant_id = $1 AND binding = $2",
                &[Arg::Text(id), Arg::Text(key)],
            )
            .await?;
        }
        tx.exec(
            "UPDATE hub_participants SET subscription = $2 WHERE id = $1",
            &[Arg::Text(id), Arg::Text(&json(subscription))],
        )
        .await?;
        let stale = tx
            .fetch(
                "SELECT binding FROM hub_stale_bindings WHERE participant_id = $1 ORDER BY binding",
                &[Arg::Text(id)],
            )
            .await?
            .iter()
            .map(|row| row.text(0))
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit().await?;
        participant.subscription = subscription.clone();
        Ok((participant, stale))
    }

    /// Binding keys still to remove from participants' queues: `(participant id, key)`.
    pub async fn stale_bindings(&self) -> Result<Vec<(String, String)>, HubError> {
        self.fetch(
            "SELECT participant_id, binding FROM hub_stale_bindings ORDER BY participant_id, binding",
            &[],
        )
        .await?
        .iter()
        .map(|row| Ok((row.text(0)?, row.text(1)?)))
        .collect()
    }

    /// Records that the broker removed these bindings of a participant's queue.
    pub async fn unbound(&self, participant_id: &str, keys: &[String]) -> Result<(), HubError> {
        for key in keys {
            self.exec(
                "DELETE FROM hub_stale_bindings WHERE participant_id = $1 AND binding = $2",
                &[Arg::Text(participant_id), Arg::Text(key)],
            )
            .await?;
        }
        Ok(())
    }

    /// Stores a report unless one with its id exists. True when it was new.
    pub async fn insert_report(&self, report: &StoredReport) -> Result<bool, HubError> {
        let inserted = execute!(
            self,
            "INSERT INTO hub_reports (id, participant_id, ip, class, severity, received_at, valid_until, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
            report.id.to_string(),
            &report.participant_id,
            report.ip.as_deref(),
            &report.class,
            &report.severity,
            report.received_at_ms,
            report.valid_until_ms,
            &report.body,
        )?;
        Ok(inserted == 1)
    }

    /// The stored body of a report and whether it was published.
    /// A stored report's body, whether it was published, and its reporter's id.
    pub async fn report_state(&self, id: Uuid) -> Result<Option<(String, bool, String)>, HubError> {
        let rows = fetch_all!(
            self,
            "SELECT body, published, participant_id FROM hub_reports WHERE id = $1",
            [id.to_string()],
            |row| Ok((
                row.try_get::<String, _>(0)?,
                row.try_get::<i64, _>(1)? != 0,
                row.try_get::<String, _>(2)?
            ))
        )?;
        Ok(rows.into_iter().next())
    }

    /// Marks a report as published to the participants, stamping when (the pull views order
    /// by that time: see `views`).
    pub async fn mark_published(&self, id: Uuid) -> Result<(), HubError> {
        execute!(
            self,
            "UPDATE hub_reports SET published = 1, published_at = COALESCE(published_at, $2) \
             WHERE id = $1",
            id.to_string(),
            now_ms(),
        )?;
        Ok(())
    }

    /// How many distinct participants other than `participant_id` reported `ip` since
    /// `since_ms`.
    pub async fn other_reporters(
        &self,
        ip: &str,
        since_ms: i64,
        participant_id: &str,
    ) -> Result<u32, HubError> {
        let rows = fetch_all!(
            self,
            "SELECT COUNT(DISTINCT participant_id) FROM hub_reports \
             WHERE ip = $1 AND received_at >= $2 AND participant_id <> $3",
            [ip, since_ms, participant_id],
            |row| row.try_get::<i64, _>(0)
        )?;
        Ok(rows
            .first()
            .copied()
            .unwrap_or(0)
            .clamp(0, i64::from(u32::MAX)) as u32)
    }

    /// Reports stored after `after_seq`, oldest first: `(seq, body)`.
    pub async fn reports_after(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<(i64, String)>, HubError> {
        Ok(fetch_all!(
            self,
            "SELECT seq, body FROM hub_reports WHERE seq > $1 ORDER BY seq LIMIT $2",
            [after_seq, i64::from(limit)],
            |row| Ok((row.try_get::<i64, _>(0)?, row.try_get::<String, _>(1)?))
        )?)
    }

    /// Closes the pool.
    pub async fn close(&self) {
        match self {
            Store::Sqlite(pool) => pool.close().await,
            Store::Postgres(pool) => pool.close().await,
        }
    }
}

pub(crate) fn participant_row<R: Row>(row: &R) -> Result<ParticipantRow, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok((
        row.try_get(0)?,
        row.try_get(1)?,
        row.try_get(2)?,
        row.try_get(3)?,
        row.try_get(4)?,
        row.try_get(5)?,
    ))
}

/// Small values as JSON text for TEXT columns.
fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data serialises")
}

pub(crate) use {execute, fetch_all};
