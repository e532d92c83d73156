//! Audit: every shell command typed on every audited host, stored so that nothing is lost and nothing can be
//! forged unnoticed, and streamed live.
//!
//! Two ways in: the original agent's `GET /omaudit/omaudit_pull/` (checked against the inventory and the peer
//! address) and `omaudit-agent`'s JSON batches (checked against a per-host token). Both become [`event::Incoming`]
//! and go to the one [`writer`], which deduplicates, chains ([`chain`]) and group-commits them, then publishes
//! the stored rows to live subscribers.
//!
//! **Architecture invariant:** audit and jobs stand side by side; neither calls the other.

pub mod alerts;
pub mod archive;
pub mod chain;
pub mod event;
mod follow;
pub mod retention;
mod writer;

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::store::{
    AlertRuleRow, AuditFound, AuditQuery, AuditRow, AuditSink, NewAlertRule, NewGap, Store, StoreError,
};
pub use event::{AgentBatch, Invalid, Source};
use event::{Incoming, Limits};
pub use writer::Outcome;

/// The purpose label of the chain key derived from the secret key (`auth::derive_key`). Changing it orphans
/// every existing chain.
pub const CHAIN_KEY_PURPOSE: &str = "audit-chain-v1";

/// Settings under `[audit]` in the configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Accept the original agent's `GET /omaudit/omaudit_pull/`.
    pub legacy: bool,
    /// Refuse a legacy request whose TCP peer is not `history_ip`. Turn off only behind a proxy that you trust.
    pub legacy_check_peer: bool,
    /// Longest command stored, in bytes; longer ones are refused (never cut).
    pub max_command_bytes: usize,
    /// Most events in one agent batch.
    pub max_batch_events: usize,
    /// Rows a command search reads, at most, when no index can answer its term (see `store::audit_search`).
    pub search_scan_rows: i64,
    /// Days of audit rows the database keeps; older rows are moved into archive files (`audit/retention.rs`).
    /// 0: keep everything.
    pub retain_days: u32,
    /// Where archive files go; `<state_dir>/audit-archive` when unset.
    pub archive_dir: Option<std::path::PathBuf>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            legacy: true,
            legacy_check_peer: true,
            max_command_bytes: 64 * 1024,
            max_batch_events: 5000,
            search_scan_rows: crate::store::SCAN_WINDOW,
            retain_days: 0,
            archive_dir: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    Invalid(#[from] Invalid),
    #[error("history_ip {0} is not a registered host")]
    UnknownHost(String),
    #[error("peer address {peer} is not history_ip {claimed}")]
    PeerMismatch { peer: String, claimed: String },
    #[error("legacy ingest is turned off")]
    LegacyOff,
    #[error("this token is not bound to a host")]
    NotAnAgent,
    #[error("{0} events in one batch; at most {1}")]
    BatchTooLarge(usize, usize),
    /// A gap whose range ends before it starts: each bound alone is what the document allows.
    #[error("gaps: bad range {0}..{1}")]
    GapRange(i64, i64),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The answer to an agent batch.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgentAck {
    pub stored: usize,
    pub duplicates: usize,
    pub rejected: Vec<Rejected>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Rejected {
    pub stream: String,
    pub seq: i64,
    pub reason: String,
}

/// An audit row as the API shows it: with the host's name.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditView {
    pub id: i64,
    pub host: String,
    pub ip: String,
    pub history_id: i64,
    pub user: String,
    pub login_user: Option<String>,
    pub tty: Option<String>,
    pub datetime: String,
    pub received_at: i64,
    pub command: String,
    /// `legacy` (the original agent), `agent` (a history line from omaudit-agent) or `execve` (an exec the
    /// kernel audited, from `omaudit-agent watch`).
    pub source: String,
    /// The kernel's audit session id: a history line and the execs of its session share it.
    pub session: Option<i64>,
    /// execve: the argument vector; each argument a string, or `{"hex": "…"}` for bytes that are not UTF-8.
    #[schema(value_type = Option<Vec<Object>>)]
    pub argv: Option<serde_json::Value>,
    /// execve: the working directory.
    pub cwd: Option<String>,
    /// execve: the executable (the file tried, for a failed exec).
    pub exe: Option<String>,
    /// execve: 0, or the negative errno of a failed exec.
    pub exit_code: Option<i64>,
    /// execve: process id, parent process id, effective uid and login uid.
    pub pid: Option<i64>,
    pub ppid: Option<i64>,
    pub euid: Option<i64>,
    pub auid: Option<i64>,
    /// The alert rules this event matches, by name; empty for most.
    pub alerts: Vec<String>,
}

/// A rule as an admin asks for it.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleRequest {
    pub name: String,
    pub pattern: String,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuleRefused {
    #[error(transparent)]
    Invalid(alerts::RuleError),
    #[error("host: {0} is not in the inventory")]
    UnknownHost(String),
    #[error(transparent)]
    Store(StoreError),
}

/// Filters shared by the query, the CSV export and the live stream.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Host ids (resolved from names, IPs or app categories); `None`: any host, an empty list: none.
    pub host_ids: Option<Vec<i64>>,
    pub users: Vec<String>,
    /// A substring of the command, case ignored: the rule of [`crate::store::Store::search_audit`].
    pub text: Option<String>,
    /// Stored `source` values; empty: any.
    pub sources: Vec<String>,
    pub session: Option<i64>,
    pub tty: Option<String>,
}

impl Filter {
    pub fn matches(&self, row: &AuditRow) -> bool {
        self.host_ids.as_ref().is_none_or(|ids| ids.contains(&row.host_id))
            && crate::store::user_matches(&self.users, &row.history_user, row.login_user.as_deref())
            && self.text.as_deref().is_none_or(|t| row.history_command.to_lowercase().contains(&t.to_lowercase()))
            && (self.sources.is_empty() || self.sources.contains(&row.source))
            && self.session.is_none_or(|s| row.session == Some(s))
            && self.tty.as_deref().is_none_or(|t| row.tty.as_deref() == Some(t))
    }
}

/// The inventory as audit needs it, cached: the legacy path looks a host up on every request.
#[derive(Default)]
struct HostCache {
    by_ip: HashMap<String, (i64, String)>,
    by_name: HashMap<String, (i64, String)>,
    names: HashMap<i64, String>,
}

pub struct AuditService {
    store: Store,
    config: AuditConfig,
    submit: mpsc::Sender<writer::Submission>,
    live: broadcast::Sender<Arc<AuditRow>>,
    hosts: RwLock<HostCache>,
    /// When the cache was last refreshed because of a miss: at most once a second, so unknown addresses cannot
    /// turn every request into an inventory read.
    refreshed: Mutex<Option<Instant>>,
    /// Held while the cache is refreshed: a request that misses meanwhile waits for that refresh instead of
    /// taking the empty cache for "unknown host".
    refreshing: tokio::sync::Mutex<()>,
    key: Vec<u8>,
    alerts: Arc<alerts::Alerts>,
    /// Stops the follower of the stored rows ([`follow`]) with the service.
    _follower: Option<tokio_util::sync::DropGuard>,
}

impl AuditService {
    /// Starts the writer thread over `sink` (see `Store::audit_sink`). `key` is the chain key (see
    /// `auth::derive_key`).
    pub fn start(
        store: Store,
        sink: Box<dyn AuditSink>,
        config: AuditConfig,
        key: Vec<u8>,
    ) -> Result<Arc<AuditService>, StoreError> {
        // Bounded: when the database is slow, requests wait here (backpressure) instead of piling up in memory.
        let (submit, rx) = mpsc::channel(1024);
        let (live, _) = broadcast::channel(4096);
        let alerts = Arc::new(alerts::Alerts::default());
        // Where servers share the database, each one's live stream follows the stored rows of all; otherwise the
        // writer publishes what it commits.
        let (writer_live, follower) = if store.shared_by_servers() {
            let stop = tokio_util::sync::CancellationToken::new();
            tokio::spawn(follow::follow(store.clone(), live.clone(), stop.clone()));
            (None, Some(stop.drop_guard()))
        } else {
            (Some(live.clone()), None)
        };
        writer::spawn(sink, key.clone(), rx, writer::Publish { live: writer_live, alerts: alerts.clone() })?;
        Ok(Arc::new(AuditService {
            store,
            config,
            submit,
            live,
            hosts: RwLock::default(),
            refreshed: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            key,
            alerts,
            _follower: follower,
        }))
    }

    pub fn config(&self) -> &AuditConfig {
        &self.config
    }

    fn limits(&self) -> Limits {
        Limits { max_command_bytes: self.config.max_command_bytes }
    }

    /// The original agent's request: stored (and committed) when this returns Ok.
    pub async fn ingest_legacy(&self, raw_query: &str, peer: IpAddr) -> Result<(), IngestError> {
        if !self.config.legacy {
            return Err(IngestError::LegacyOff);
        }
        let p = event::parse_legacy_query(raw_query)?;
        let required = |field: &'static str, v: Option<String>| -> Result<String, Invalid> {
            v.filter(|s| !s.is_empty()).ok_or(Invalid { field, reason: "is missing or empty".into() })
        };
        let history_id = event::check_history_id(&required("history_id", p.history_id)?)?;
        let ip = event::canonical_ip("history_ip", &required("history_ip", p.history_ip)?)?;
        let user = event::check_user("history_user", required("history_user", p.history_user)?)?;
        let datetime = event::check_datetime("history_datetime", required("history_datetime", p.history_datetime)?)?;
        let command =
            event::check_command("history_command", required("history_command", p.history_command)?, self.limits())?;
        let peer = event::canonical(peer).to_string();
        if self.config.legacy_check_peer && peer != ip {
            return Err(IngestError::PeerMismatch { peer, claimed: ip });
        }
        let (host_id, _) = self.host_by_ip(&ip).await?.ok_or_else(|| IngestError::UnknownHost(ip.clone()))?;
        let incoming = Incoming {
            host_id,
            ip,
            history_id,
            user,
            login_user: None,
            tty: None,
            datetime,
            command,
            source: Source::Legacy,
            stream: None,
            seq: None,
            session: None,
            exec: event::ExecFields::default(),
        };
        self.write(vec![incoming], Vec::new()).await.map(|_| ())
    }

    /// An agent's batch for the host its token is bound to.
    pub async fn ingest_agent(&self, host_id: Option<i64>, batch: AgentBatch) -> Result<AgentAck, IngestError> {
        let host_id = host_id.ok_or(IngestError::NotAnAgent)?;
        if batch.events.len() > self.config.max_batch_events {
            return Err(IngestError::BatchTooLarge(batch.events.len(), self.config.max_batch_events));
        }
        let host_ip = self.host_ip(host_id).await?;
        let mut rejected = Vec::new();
        let mut accepted = Vec::with_capacity(batch.events.len());
        for e in batch.events {
            let seq = e.seq;
            match event::check_agent_event(host_id, &host_ip, e, self.limits()) {
                Ok(incoming) => accepted.push(incoming),
                Err((why, stream)) => rejected.push(Rejected { stream, seq, reason: why.to_string() }),
            }
        }
        let mut gaps = Vec::new();
        for g in batch.gaps {
            let stream = event::check_stream(g.stream)?;
            if g.from_seq < 1 || g.to_seq < 1 {
                return Err(Invalid { field: "gaps", reason: format!("bad range {}..{}", g.from_seq, g.to_seq) }.into());
            }
            if g.to_seq < g.from_seq {
                return Err(IngestError::GapRange(g.from_seq, g.to_seq));
            }
            let reason: String = g.reason.chars().filter(|c| !c.is_control()).take(255).collect();
            tracing::warn!(host_id, stream = %stream, from_seq = g.from_seq, to_seq = g.to_seq, reason = %reason, "agent reports lost events");
            gaps.push(NewGap { host_id, stream, from_seq: g.from_seq, to_seq: g.to_seq, reason });
        }
        let outcomes = self.write(accepted, gaps).await?;
        let duplicates = outcomes.iter().filter(|o| **o == Outcome::Duplicate).count();
        Ok(AgentAck { stored: outcomes.len() - duplicates, duplicates, rejected })
    }

    async fn write(&self, events: Vec<Incoming>, gaps: Vec<NewGap>) -> Result<Vec<Outcome>, IngestError> {
        let (reply, answer) = oneshot::channel();
        let unavailable = || IngestError::Unavailable("the audit writer has stopped".into());
        let received_at = crate::store::now_ms();
        let events = events.into_iter().map(|e| writer::Pending::new(e, received_at)).collect();
        self.submit.send(writer::Submission { events, gaps, reply }).await.map_err(|_| unavailable())?;
        answer.await.map_err(|_| unavailable())?.map_err(IngestError::Unavailable)
    }

    /// Stored rows from now on. A subscriber that falls more than 4096 rows behind is told it lagged.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<AuditRow>> {
        self.live.subscribe()
    }

    /// Turns host names or IPs into ids; unknown ones are returned as the error.
    pub async fn resolve_hosts(&self, keys: &[String]) -> Result<Vec<i64>, Result<Vec<String>, StoreError>> {
        let mut ids = Vec::new();
        let mut unknown = Vec::new();
        for key in keys {
            let wanted = crate::store::host_key(key);
            match self
                .lookup(|c| c.by_ip.get(&wanted).or_else(|| c.by_name.get(&wanted)).cloned())
                .await
                .map_err(Err)?
            {
                Some((id, _)) => ids.push(id),
                None => unknown.push(key.clone()),
            }
        }
        if unknown.is_empty() {
            Ok(ids)
        } else {
            Err(Ok(unknown))
        }
    }

    /// The ids of every host in an app category of one of these names (under any function category); names no
    /// host's app category has are returned as the error.
    pub async fn hosts_in_apps(&self, apps: &[String]) -> Result<Vec<i64>, Result<Vec<String>, StoreError>> {
        let hosts = self.store.inventory_snapshot().await.map_err(Err)?;
        let unknown: Vec<String> =
            apps.iter().filter(|app| !hosts.iter().any(|h| h.app.as_ref() == Some(*app))).cloned().collect();
        if !unknown.is_empty() {
            return Err(Ok(unknown));
        }
        Ok(hosts.iter().filter(|h| h.app.as_ref().is_some_and(|app| apps.contains(app))).map(|h| h.id).collect())
    }

    /// The rows that pass `filter`, where the listing goes on, and which window a command search read when no
    /// index could answer it (at most `[audit] search_scan_rows`).
    pub async fn search(&self, filter: &AuditQuery) -> Result<AuditFound, StoreError> {
        let filter = AuditQuery { scan_rows: Some(self.config.search_scan_rows), ..filter.clone() };
        self.store.search_audit(&filter).await
    }

    /// Rows as the API shows them.
    pub async fn views(&self, rows: &[AuditRow]) -> Vec<AuditView> {
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(self.view(row).await);
        }
        out
    }

    /// The alert rules `row` matches, by name (no host lookup: for readers of every row).
    pub fn alerts_of(&self, row: &AuditRow) -> Vec<String> {
        self.alerts.matching(row)
    }

    /// The API's form of a row.
    pub async fn view(&self, row: &AuditRow) -> AuditView {
        let host = self
            .lookup(|c| c.names.get(&row.host_id).cloned())
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| format!("#{}", row.host_id));
        AuditView {
            id: row.id,
            host,
            ip: row.history_ip.clone(),
            history_id: row.history_id,
            user: row.history_user.clone(),
            login_user: row.login_user.clone(),
            tty: row.tty.clone(),
            datetime: row.history_datetime.clone(),
            received_at: row.received_at,
            command: row.history_command.clone(),
            source: row.source.clone(),
            session: row.session,
            // Stored by the ingest from a checked list; a row edited into something else shows as null (and
            // fails `verify`).
            argv: row.argv.as_deref().and_then(|a| serde_json::from_str(a).ok()),
            cwd: row.cwd.clone(),
            exe: row.exe.clone(),
            exit_code: row.exit_code,
            pid: row.pid,
            ppid: row.ppid,
            euid: row.euid,
            auid: row.auid,
            alerts: self.alerts.matching(row),
        }
    }

    /// Loads the stored alert rules and puts them in force (at start and after every change).
    pub async fn reload_alerts(&self) -> Result<(), StoreError> {
        self.alerts.set(&self.store.alert_rules().await?);
        Ok(())
    }

    pub async fn alert_rules(&self) -> Result<Vec<AlertRuleRow>, StoreError> {
        self.store.alert_rules().await
    }

    /// Checks and stores a rule, and puts it in force at once. `host` is an inventory name or IP.
    pub async fn add_alert_rule(&self, rule: RuleRequest, by: &str) -> Result<i64, RuleRefused> {
        alerts::check(&rule.name, &rule.pattern).map_err(RuleRefused::Invalid)?;
        let host_id = match rule.host.as_deref().map(str::trim).filter(|h| !h.is_empty()) {
            None => None,
            Some(host) => match self.resolve_hosts(&[host.to_owned()]).await {
                Ok(ids) => ids.first().copied(),
                Err(Ok(_)) => return Err(RuleRefused::UnknownHost(host.to_owned())),
                Err(Err(err)) => return Err(RuleRefused::Store(err)),
            },
        };
        let user = rule.user.as_deref().map(str::trim).filter(|u| !u.is_empty());
        let new = NewAlertRule { name: &rule.name, pattern: &rule.pattern, host_id, user_name: user, created_by: by };
        let id = self.store.add_alert_rule(&new).await.map_err(RuleRefused::Store)?;
        self.reload_alerts().await.map_err(RuleRefused::Store)?;
        Ok(id)
    }

    pub async fn delete_alert_rule(&self, id: i64) -> Result<bool, StoreError> {
        let deleted = self.store.delete_alert_rule(id).await?;
        self.reload_alerts().await?;
        Ok(deleted)
    }

    /// Hosts were added or changed: look them up afresh on the next request.
    pub fn inventory_changed(&self) {
        *self.refreshed.lock().unwrap_or_else(|e| e.into_inner()) = None;
        *self.hosts.write().unwrap_or_else(|e| e.into_inner()) = HostCache::default();
    }

    pub async fn verify(&self) -> Result<chain::Report, StoreError> {
        chain::verify(&self.store, &self.key).await
    }

    /// Retention over this service's store and chain key, archiving into `dir`.
    pub fn retention(&self, dir: std::path::PathBuf) -> retention::Retention {
        retention::Retention::new(self.store.clone(), &self.key, dir)
    }

    async fn host_by_ip(&self, ip: &str) -> Result<Option<(i64, String)>, StoreError> {
        self.lookup(|c| c.by_ip.get(ip).cloned()).await
    }

    async fn host_ip(&self, host_id: i64) -> Result<String, IngestError> {
        let found =
            self.lookup(|c| c.by_ip.iter().find(|(_, (id, _))| *id == host_id).map(|(ip, _)| ip.clone())).await?;
        found.ok_or_else(|| {
            IngestError::Unavailable(format!("host #{host_id} of this token is no longer in the inventory"))
        })
    }

    /// Looks in the cache; on a miss, refreshes it (at most once a second) and looks again.
    async fn lookup<T>(&self, find: impl Fn(&HostCache) -> Option<T>) -> Result<Option<T>, StoreError> {
        if let Some(found) = find(&self.hosts.read().unwrap_or_else(|e| e.into_inner())) {
            return Ok(Some(found));
        }
        let _refreshing = self.refreshing.lock().await;
        if let Some(found) = find(&self.hosts.read().unwrap_or_else(|e| e.into_inner())) {
            return Ok(Some(found));
        }
        {
            let mut last = self.refreshed.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                return Ok(None);
            }
            *last = Some(Instant::now());
        }
        let rows = self.store.list_hosts().await?;
        let mut cache = HostCache::default();
        for h in rows {
            cache.by_ip.insert(h.ip.clone(), (h.id, h.name.clone()));
            cache.by_name.insert(h.name.clone(), (h.id, h.name.clone()));
            cache.names.insert(h.id, h.name);
        }
        let found = find(&cache);
        *self.hosts.write().unwrap_or_else(|e| e.into_inner()) = cache;
        Ok(found)
    }
}
