//! The inventory in the original's three levels: function category → app category → host.

use serde::Serialize;

use super::{insert_id, now_ms, on_pool, Store, StoreError};

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
    pub async fn list_hosts(&self) -> Result<Vec<HostRow>, StoreError> {
        let query = format!("{SELECT_HOSTS} ORDER BY h.server_name");
        let sql = self.sql(&query);
        Ok(on_pool!(self, pool => sqlx::query_as::<_, HostRow>(&sql).fetch_all(pool).await)?)
    }

    /// Finds hosts whose name or internal IP is one of `keys`, as given or as a [`host_key`] (rows written before
    /// names were normalised, or not through the API, are still found as they are).
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
        Ok(on_pool!(self, pool => {
            let mut q = sqlx::query_as::<_, HostRow>(&sql);
            for key in keys.iter().chain(&keys) {
                q = q.bind(key);
            }
            q.fetch_all(pool).await
        })?)
    }

    pub async fn host_count(&self) -> Result<i64, StoreError> {
        Ok(
            on_pool!(self, pool => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM server_list").fetch_one(pool).await)?,
        )
    }

    /// Adds a host, creating its categories when they are new. A taken name or IP is a `Conflict`. The name is
    /// stored in lower case.
    pub async fn add_host(&self, host: &NewHost) -> Result<HostRow, StoreError> {
        let name = host_key(&host.name);
        let app_id = match &host.category {
            Some((function, app)) => Some(self.app_category(function, app).await?),
            None => None,
        };
        let id = insert_id!(
            self,
            "INSERT INTO server_list (server_name, server_wip, server_lip, server_op, server_app_id, server_port, \
             server_user, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            &name,
            &host.wan_ip,
            &host.ip,
            &host.op,
            app_id,
            host.port.map(i32::from),
            &host.user,
            now_ms()
        )
        .map_err(|e| {
            StoreError::conflict_or(e, || format!("a host named {name:?} or with IP {} exists already", host.ip))
        })?;
        let query = format!("{SELECT_HOSTS} WHERE h.id = ?");
        let sql = self.sql(&query);
        Ok(on_pool!(self, pool => sqlx::query_as::<_, HostRow>(&sql).bind(id).fetch_one(pool).await)?)
    }

    /// The id of the app category `app` under function category `function`, created when missing.
    async fn app_category(&self, function: &str, app: &str) -> Result<i64, StoreError> {
        let find_fun = self.sql("SELECT id FROM server_fun_categ WHERE server_categ_name = ?");
        // Each loop reads, then inserts; losing the insert race to another request means the row now exists, so
        // the next read finds it. Two rounds are enough; a third failure is a real error.
        let mut rounds = 0;
        let fun_id = loop {
            rounds += 1;
            let found: Option<i64> =
                on_pool!(self, pool => sqlx::query_scalar(&find_fun).bind(function).fetch_optional(pool).await)?;
            if let Some(id) = found {
                break id;
            }
            match insert_id!(self, "INSERT INTO server_fun_categ (server_categ_name) VALUES (?)", function) {
                Ok(id) => break id,
                // Another request created it between our read and insert: read again.
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() && rounds < 3 => continue,
                Err(e) => return Err(e.into()),
            }
        };
        let find_app = self.sql("SELECT id FROM server_app_categ WHERE server_categ_id = ? AND app_categ_name = ?");
        for round in 1.. {
            let found: Option<i64> = on_pool!(self, pool =>
                sqlx::query_scalar(&find_app).bind(fun_id).bind(app).fetch_optional(pool).await)?;
            if let Some(id) = found {
                return Ok(id);
            }
            let sql = "INSERT INTO server_app_categ (server_categ_id, app_categ_name) VALUES (?, ?)";
            match insert_id!(self, sql, fun_id, app) {
                Ok(id) => return Ok(id),
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() && round < 3 => continue,
                Err(e) => return Err(e.into()),
            }
        }
        unreachable!("the loop returns")
    }
}
