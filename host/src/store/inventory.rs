//! The inventory in the original's three levels: function category → app category → host.

use serde::Serialize;

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use super::{now_ms, on_pool, Dialect, Store, StoreError};

/// How long [`Store::inventory_snapshot`] shares one read of the inventory.
pub const SNAPSHOT_TTL: Duration = Duration::from_secs(1);

/// The shared read, and a generation every host write bumps: a read begun before a write is not kept after it.
#[derive(Debug, Clone, Default)]
pub(super) struct Snapshot(Arc<Mutex<SnapshotState>>);

#[derive(Debug, Default)]
struct SnapshotState {
    generation: u64,
    kept: Option<(Instant, Arc<[HostRow]>)>,
}

impl Snapshot {
    fn lock(&self) -> MutexGuard<'_, SnapshotState> {
        // Two plain fields, each written whole: nothing a panic could leave half-done.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fresh(&self) -> Option<Arc<[HostRow]>> {
        let state = self.lock();
        state.kept.as_ref().filter(|(at, _)| at.elapsed() < SNAPSHOT_TTL).map(|(_, hosts)| hosts.clone())
    }

    fn generation(&self) -> u64 {
        self.lock().generation
    }

    fn keep(&self, generation: u64, hosts: Arc<[HostRow]>) {
        let mut state = self.lock();
        if state.generation == generation {
            state.kept = Some((Instant::now(), hosts));
        }
    }

    fn invalidate(&self) {
        let mut state = self.lock();
        state.generation += 1;
        state.kept = None;
    }
}

/// A host as stored, with its categories' names.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct HostRow {
    pub id: i64,
    #[sqlx(rename = "server_name")]
    pub name: String,
    #[sqlx(rename = "server_lip")]
    pub ip: String,
    #[sqlx(rename = "server_wip")]
    pub wan_ip: Option<String>,
    #[sqlx(rename = "server_op")]
    pub op: Option<String>,
    pub function: Option<String>,
    pub app: Option<String>,
    /// SSH port for the ssh and ansible backends; `None`: the backend's default.
    #[sqlx(rename = "server_port")]
    pub port: Option<i32>,
    /// Login user for the ssh and ansible backends; `None`: the backend's default.
    #[sqlx(rename = "server_user")]
    pub user: Option<String>,
    pub created_at: i64,
    /// Free tags, in order (filled by [`Store::list_hosts`]; other lookups leave it empty).
    #[sqlx(skip)]
    pub tags: Vec<String>,
}

impl HostRow {
    /// Whether the host is in any of `functions`, in any of `apps`, or has any of `tags` (tags compare without
    /// case): how a saved job's targets and a grant select hosts.
    pub fn matches(&self, functions: &[String], apps: &[String], tags: &[String]) -> bool {
        let in_category =
            |have: &Option<String>, wanted: &[String]| have.as_ref().is_some_and(|c| wanted.iter().any(|w| w == c));
        self.tags.iter().any(|t| tags.iter().any(|w| w.eq_ignore_ascii_case(t)))
            || in_category(&self.function, functions)
            || in_category(&self.app, apps)
    }
}

/// A host to add. `function` and `app` go together: both or neither.
#[derive(Debug, Clone)]
pub struct NewHost {
    pub name: String,
    pub ip: String,
    pub wan_ip: Option<String>,
    pub op: Option<String>,
    pub category: Option<(String, String)>,
    pub port: Option<u16>,
    pub user: Option<String>,
    /// Trimmed, lower case, distinct (see `http::hosts::validate_host`).
    pub tags: Vec<String>,
}

const SELECT_HOSTS: &str = "SELECT h.id, h.server_name, h.server_lip, h.server_wip, h.server_op, \
     h.server_port, h.server_user, f.server_categ_name AS function, a.app_categ_name AS app, h.created_at \
     FROM server_list h \
     LEFT JOIN server_app_categ a ON a.id = h.server_app_id \
     LEFT JOIN server_fun_categ f ON f.id = a.server_categ_id";

/// How a host is looked up: an address in canonical form (`::0001` is `::1`), a name in lower case (host names
/// are case-insensitive, and MariaDB's default collation compares them so anyway: all three databases agree).
pub fn host_key(key: &str) -> String {
    let key = key.trim();
    match key.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => key.to_ascii_lowercase(),
    }
}

impl Store {
    /// Every host with its categories and tags, by name.
    pub async fn list_hosts(&self) -> Result<Vec<HostRow>, StoreError> {
        let query = format!("{SELECT_HOSTS} ORDER BY h.server_name");
        let sql = self.sql(&query);
        let mut hosts = on_pool!(self, pool => sqlx::query_as::<_, HostRow>(&sql).fetch_all(pool).await)?;
        let tags_sql = "SELECT host_id, tag FROM host_tags ORDER BY tag";
        let tags: Vec<(i64, String)> =
            on_pool!(self, pool => sqlx::query_as::<_, (i64, String)>(tags_sql).fetch_all(pool).await)?;
        let mut by_host: std::collections::HashMap<i64, Vec<String>> = std::collections::HashMap::new();
        for (host, tag) in tags {
            by_host.entry(host).or_default().push(tag);
        }
        for host in &mut hosts {
            host.tags = by_host.remove(&host.id).unwrap_or_default();
        }
        Ok(hosts)
    }

    /// One host by id, with its tags.
    pub async fn host(&self, id: i64) -> Result<Option<HostRow>, StoreError> {
        Ok(self.list_hosts().await?.into_iter().find(|h| h.id == id))
    }

    /// Finds hosts, with their tags, whose name or internal IP is one of `keys`, as given or as a [`host_key`]
    /// (rows written before names were normalised, or not through the API, are still found as they are).
    pub async fn find_hosts(&self, keys: &[String]) -> Result<Vec<HostRow>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut keys: Vec<String> = keys.iter().flat_map(|k| [k.clone(), host_key(k)]).collect();
        keys.sort();
        keys.dedup();
        let marks = vec!["?"; keys.len()].join(", ");
        let query = format!("{SELECT_HOSTS} WHERE h.server_name IN ({marks}) OR h.server_lip IN ({marks})");
        let sql = self.sql(&query);
        let mut hosts = on_pool!(self, pool => {
            let mut q = sqlx::query_as::<_, HostRow>(&sql);
            for key in keys.iter().chain(&keys) {
                q = q.bind(key);
            }
            q.fetch_all(pool).await
        })?;
        if hosts.is_empty() {
            return Ok(hosts);
        }
        let tags_sql = format!(
            "SELECT host_id, tag FROM host_tags WHERE host_id IN ({}) ORDER BY tag",
            vec!["?"; hosts.len()].join(", ")
        );
        let tags_sql = self.sql(&tags_sql);
        let tags: Vec<(i64, String)> = on_pool!(self, pool => {
            let mut q = sqlx::query_as::<_, (i64, String)>(&tags_sql);
            for host in &hosts {
                q = q.bind(host.id);
            }
            q.fetch_all(pool).await
        })?;
        for (id, tag) in tags {
            if let Some(host) = hosts.iter_mut().find(|h| h.id == id) {
                host.tags.push(tag);
            }
        }
        Ok(hosts)
    }

    pub async fn host_count(&self) -> Result<i64, StoreError> {
        Ok(
            on_pool!(self, pool => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM server_list").fetch_one(pool).await)?,
        )
    }

    /// The inventory as [`Store::list_hosts`] reads it, shared for up to [`SNAPSHOT_TTL`]: what a scoped caller's
    /// grants are checked against on every audit query and overview, which would otherwise read every host and
    /// tag each time. A host written through this store drops it at once; a change made by another process (the
    /// CLI, another server) is seen within the TTL.
    pub async fn inventory_snapshot(&self) -> Result<Arc<[HostRow]>, StoreError> {
        if let Some(hosts) = self.snapshot.fresh() {
            return Ok(hosts);
        }
        let generation = self.snapshot.generation();
        let hosts: Arc<[HostRow]> = self.list_hosts().await?.into();
        self.snapshot.keep(generation, hosts.clone());
        Ok(hosts)
    }

    /// Adds a host with its tags, creating its categories when they are new, all in one transaction: a failed
    /// insert (a taken name or IP is a `Conflict`) leaves no category behind. The name is stored in lower case.
    pub async fn add_host(&self, host: &NewHost) -> Result<HostRow, StoreError> {
        self.write_host(None, host).await
    }

    /// Replaces a host's fields, categories and tags (one transaction). `None` when there is no such host.
    pub async fn update_host(&self, id: i64, host: &NewHost) -> Result<Option<HostRow>, StoreError> {
        if self.host(id).await?.is_none() {
            return Ok(None);
        }
        self.write_host(Some(id), host).await.map(Some)
    }

    /// Deletes a host and its tags. A host with audit history or agent tokens is kept (`Conflict`): the audit
    /// trail must not lose the host its commands came from. False when there is no such host.
    pub async fn delete_host(&self, id: i64) -> Result<bool, StoreError> {
        let (tags, host) =
            (self.sql("DELETE FROM host_tags WHERE host_id = ?"), self.sql("DELETE FROM server_list WHERE id = ?"));
        let deleted = on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            sqlx::query(&tags).bind(id).execute(&mut *tx).await?;
            let done = sqlx::query(&host).bind(id).execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            Ok::<u64, sqlx::Error>(done)
        }.await);
        self.snapshot.invalidate();
        match deleted {
            Ok(done) => Ok(done > 0),
            Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => Err(StoreError::Conflict(
                "this host has audit history or agent tokens; it stays in the inventory".to_owned(),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Inserts (`id` None) or updates a host, its categories and tags in one transaction.
    async fn write_host(&self, id: Option<i64>, host: &NewHost) -> Result<HostRow, StoreError> {
        let written = self.write_host_once(id, host).await;
        self.snapshot.invalidate();
        written
    }

    async fn write_host_once(&self, id: Option<i64>, host: &NewHost) -> Result<HostRow, StoreError> {
        let name = host_key(&host.name);
        // Categories are created if missing without failing when a concurrent transaction creates them too.
        let ignore = |table_cols: &str| match self.dialect {
            Dialect::MySql => format!("INSERT IGNORE INTO {table_cols}"),
            _ => format!("INSERT INTO {table_cols} ON CONFLICT DO NOTHING"),
        };
        let insert_fun = self.sql(&ignore("server_fun_categ (server_categ_name) VALUES (?)")).into_owned();
        let find_fun = self.sql("SELECT id FROM server_fun_categ WHERE server_categ_name = ?").into_owned();
        let insert_app =
            self.sql(&ignore("server_app_categ (server_categ_id, app_categ_name) VALUES (?, ?)")).into_owned();
        let find_app =
            self.sql("SELECT id FROM server_app_categ WHERE server_categ_id = ? AND app_categ_name = ?").into_owned();
        let write = match id {
            None => self.sql(
                "INSERT INTO server_list (server_name, server_wip, server_lip, server_op, server_app_id,                  server_port, server_user, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ),
            Some(_) => self.sql(
                "UPDATE server_list SET server_name = ?, server_wip = ?, server_lip = ?, server_op = ?,                  server_app_id = ?, server_port = ?, server_user = ? WHERE id = ?",
            ),
        }
        .into_owned();
        let find_host = self.sql("SELECT id FROM server_list WHERE server_name = ?").into_owned();
        let clear_tags = self.sql("DELETE FROM host_tags WHERE host_id = ?").into_owned();
        let add_tag = self.sql("INSERT INTO host_tags (host_id, tag) VALUES (?, ?)").into_owned();
        // The last bind: created_at for an insert, the id for an update.
        let last = id.unwrap_or_else(now_ms);
        let written = on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            let mut app_id: Option<i64> = None;
            if let Some((function, app)) = &host.category {
                sqlx::query(&insert_fun).bind(function).execute(&mut *tx).await?;
                let fun_id: i64 = sqlx::query_scalar(&find_fun).bind(function).fetch_one(&mut *tx).await?;
                sqlx::query(&insert_app).bind(fun_id).bind(app).execute(&mut *tx).await?;
                app_id = Some(sqlx::query_scalar(&find_app).bind(fun_id).bind(app).fetch_one(&mut *tx).await?);
            }
            sqlx::query(&write)
                .bind(&name)
                .bind(&host.wan_ip)
                .bind(&host.ip)
                .bind(&host.op)
                .bind(app_id)
                .bind(host.port.map(i32::from))
                .bind(&host.user)
                .bind(last)
                .execute(&mut *tx)
                .await?;
            let host_id: i64 = sqlx::query_scalar(&find_host).bind(&name).fetch_one(&mut *tx).await?;
            sqlx::query(&clear_tags).bind(host_id).execute(&mut *tx).await?;
            for tag in &host.tags {
                sqlx::query(&add_tag).bind(host_id).bind(tag).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok::<i64, sqlx::Error>(host_id)
        }.await)
        .map_err(|e| {
            StoreError::conflict_or(e, || format!("a host named {name:?} or with IP {} exists already", host.ip))
        })?;
        self.host(written).await?.ok_or_else(|| StoreError::Conflict(format!("host {name} vanished")))
    }
}
