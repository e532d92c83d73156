//! The servers of one database. Each serving process joins under its `node_name`: it takes the database's lock
//! on that name (`Store::lock_serving`: one server per SQLite file or MariaDB database, one per name on
//! PostgreSQL), registers itself, and writes a heartbeat every [`HEARTBEAT`] until it stops, when it leaves the
//! list. `GET /api/cluster` and the console's `/cluster` page read the list.
//!
//! A server that stops answering is taken for gone by the others (on PostgreSQL, the only database servers share)
//! once its heartbeat has not moved for [`LEASE`] of their own live heartbeats *and* its lock is free, so the
//! database saw its connection end: the one server that gets its lock ends its unfinished jobs (`failed`, the hosts
//! without a stored result `lost`). Jobs are never re-run by themselves: modules have side effects.
//!
//! A command-line process (`omserver user add`, `audit verify`) opens the database without joining: only
//! `serve` holds the lock.

pub mod lead;
pub mod signals;

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Serialize;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::{
    plugins::Registry,
    store::{now_ms, JoinError, ServeLock, Store, StoreError},
};

/// How often a server says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A server not heard from for this long is shown as silent (three heartbeats missed).
pub const SILENT_AFTER: Duration = Duration::from_secs(15);
/// A server whose heartbeat has not moved for this long, as watched by a server whose own heartbeats went
/// through, is taken for gone (if its lock is free).
pub const LEASE: Duration = Duration::from_secs(15);
/// How long a starting server asks again for a lock that is held.
const TAKEOVER: Duration = Duration::from_secs(10);
/// A server silent for this long leaves the list (gone for good, or renamed).
const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);

/// One server of the database, as `GET /api/cluster` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ServerView {
    pub name: String,
    /// How people and other servers reach it (`node_address`).
    pub address: String,
    /// The omserver version it runs.
    pub version: String,
    /// Unix ms.
    pub started_at: i64,
    /// Its last heartbeat, Unix ms.
    pub last_seen_at: i64,
    /// How many jobs run on it now.
    pub running_jobs: usize,
    /// The ids of those jobs, oldest first.
    pub jobs: Vec<i64>,
    /// Heard from within the last 15 s (three heartbeats).
    pub up: bool,
    /// The server that answered this request.
    pub this: bool,
}

/// This server's place among the servers of its database.
pub struct Cluster {
    store: Store,
    name: String,
    address: String,
    lock: Mutex<ServeLock>,
    /// The other servers' last heartbeat as this one saw it, and since when it has not moved.
    watched: std::sync::Mutex<HashMap<String, Watched>>,
}

struct Watched {
    last_seen_at: i64,
    since: Instant,
    /// Its unfinished jobs were ended for it at this heartbeat: nothing more to do until it beats again.
    taken_over: bool,
}

impl Cluster {
    /// Takes the name (or refuses: another live server holds it, or the database allows only one server) and
    /// registers this server as started now. A lock still held is asked again for [`TAKEOVER`]: the database lets
    /// go of a crashed process's lock only once it notices the connection gone, and a supervisor restarts at once.
    pub async fn join(store: Store, name: String, address: String) -> Result<Cluster, JoinError> {
        let deadline = tokio::time::Instant::now() + TAKEOVER;
        let lock = loop {
            match store.lock_serving(&name).await {
                Err(JoinError::Taken(why)) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(node = %name, why, "the lock is held; asking again");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                taken => break taken?,
            }
        };
        store.register_node(&name, &address, env!("CARGO_PKG_VERSION")).await?;
        tracing::info!(node = %name, %address, "joined the database's servers");
        Ok(Cluster { store, name, address, lock: Mutex::new(lock), watched: Default::default() })
    }

    /// This server's name: what its jobs' `node` says.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every registered server, by name, with what it runs.
    pub async fn servers(&self) -> Result<Vec<ServerView>, StoreError> {
        let nodes = self.store.nodes().await?;
        let mut running: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for (node, job) in self.store.running_jobs_by_node().await? {
            running.entry(node).or_default().push(job);
        }
        let silent_since = now_ms() - millis(SILENT_AFTER);
        Ok(nodes
            .into_iter()
            .map(|node| {
                let jobs = running.remove(&node.name).unwrap_or_default();
                ServerView {
                    this: node.name == self.name,
                    up: node.last_seen_at >= silent_since,
                    running_jobs: jobs.len(),
                    jobs,
                    name: node.name,
                    address: node.address,
                    version: node.version,
                    started_at: node.started_at,
                    last_seen_at: node.last_seen_at,
                }
            })
            .collect())
    }

    /// The servers serving each module file, by (file, sha256): what every server recorded with its heartbeat.
    pub async fn module_servers(&self) -> Result<HashMap<(String, String), Vec<String>>, StoreError> {
        let mut servers: HashMap<(String, String), Vec<String>> = HashMap::new();
        for (node, file, sha256) in self.store.served_modules().await? {
            servers.entry((file, sha256)).or_default().push(node);
        }
        Ok(servers)
    }

    /// Heartbeats until `shutdown`, then leaves the list. A database that was unreachable is told again: the lock
    /// is taken anew when its connection was lost, the row written anew when it was removed. With each heartbeat,
    /// the modules `registry` serves are recorded when they changed.
    pub async fn run(self: Arc<Self>, registry: Arc<Registry>, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(HEARTBEAT);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut recorded = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticks.tick() => {}
            }
            self.beat().await;
            let serving = registry.serving();
            if recorded.as_ref() != Some(&serving) {
                match self.store.record_node_modules(&self.name, &serving).await {
                    Ok(()) => recorded = Some(serving),
                    Err(err) => tracing::warn!(node = %self.name, error = %err, "could not record the modules served"),
                }
            }
        }
        if let Err(err) = self.store.remove_node(&self.name).await {
            tracing::warn!(node = %self.name, error = %err, "could not leave the list of servers");
        }
    }

    async fn beat(&self) {
        let mut lock = self.lock.lock().await;
        if !lock.holds().await {
            match self.store.lock_serving(&self.name).await {
                Ok(again) => {
                    tracing::warn!(node = %self.name, "the database forgot this server's lock (restarted?): taken again");
                    *lock = again;
                }
                Err(err) => {
                    tracing::error!(node = %self.name, error = %err, "cannot take this server's lock again");
                    return;
                }
            }
        }
        drop(lock);
        let beaten = match self.store.heartbeat_node(&self.name).await {
            Ok(true) => true,
            Ok(false) => {
                let again = self.store.register_node(&self.name, &self.address, env!("CARGO_PKG_VERSION")).await;
                if let Err(err) = &again {
                    tracing::warn!(node = %self.name, error = %err, "could not register this server again");
                }
                again.is_ok()
            }
            Err(err) => {
                tracing::warn!(node = %self.name, error = %err, "heartbeat not recorded");
                false
            }
        };
        if beaten {
            self.take_over().await;
        } else {
            // What was watched while this server could not reach the database says nothing about the others.
            self.watch().clear();
        }
        match self.store.forget_nodes_before(now_ms() - millis(FORGET_AFTER)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(servers = n, "servers silent for a day forgotten"),
            Err(err) => tracing::debug!(error = %err, "could not forget silent servers"),
        }
    }
}

impl Cluster {
    fn watch(&self) -> std::sync::MutexGuard<'_, HashMap<String, Watched>> {
        // Plain values, each written whole: a panic cannot leave them half-done.
        self.watched.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the unfinished jobs of each server gone silent (see the module's comment). Only PostgreSQL is shared.
    async fn take_over(&self) {
        if !self.store.shared_by_servers() {
            return;
        }
        let nodes = match self.store.nodes().await {
            Ok(nodes) => nodes,
            Err(err) => {
                tracing::warn!(error = %err, "could not read the list of servers");
                return;
            }
        };
        let mut silent = Vec::new();
        {
            let mut watched = self.watch();
            watched.retain(|name, _| nodes.iter().any(|n| &n.name == name));
            for node in nodes.iter().filter(|n| n.name != self.name) {
                match watched.get(&node.name) {
                    Some(w) if w.last_seen_at == node.last_seen_at => {
                        if !w.taken_over && w.since.elapsed() >= LEASE {
                            silent.push(node.name.clone());
                        }
                    }
                    _ => {
                        let fresh =
                            Watched { last_seen_at: node.last_seen_at, since: Instant::now(), taken_over: false };
                        watched.insert(node.name.clone(), fresh);
                    }
                }
            }
        }
        for name in silent {
            // Its lock held: it lives (its database connection does), or another server is taking over right now.
            let lock = match self.store.lock_serving(&name).await {
                Ok(lock) => lock,
                Err(JoinError::Taken(_)) => continue,
                Err(JoinError::Store(err)) => {
                    tracing::warn!(node = %name, error = %err, "could not ask for a silent server's lock");
                    continue;
                }
            };
            let why = format!("server {name} stopped answering");
            match self.store.fail_unfinished_jobs(&name, false, &why).await {
                Ok(jobs) => {
                    if !jobs.is_empty() {
                        tracing::warn!(node = %name, ?jobs, "a silent server's unfinished jobs ended: failed, hosts lost");
                    }
                    if let Some(w) = self.watch().get_mut(&name) {
                        w.taken_over = true;
                    }
                }
                Err(err) => tracing::warn!(node = %name, error = %err, "could not end a silent server's jobs"),
            }
            drop(lock);
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
