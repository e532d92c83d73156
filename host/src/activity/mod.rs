//! The activity log: every change made through the API, the console or the command line, and every login, with
//! who made it (a user, a token, a schedule, the server itself), from where (address, user agent), what (the
//! object and its changed fields, never a secret), when and how it ended.
//!
//! Rows are chained like the audit trail ([`crate::audit::chain`]): each row's hash is an HMAC, under a key derived
//! from the server's secret, of its fields and of the previous row's hash, and `activity_head` holds the newest
//! row's id and hash. A row edited or deleted behind the server's back, or the newest rows removed, is found by
//! [`verify`] (`omserver audit verify`, `GET /api/audit/verify`); a consistent forgery needs the key.
//!
//! Recording never fails the change it records: the change has happened; a record that could not be stored is
//! logged as an error (and counted), so that an operator sees the gap.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::{
    audit::chain::ChainKey,
    auth::{Credential, Principal},
    store::{now_ms, NewActivity, Store, StoreError, ACTIVITY_GENESIS},
};

/// The purpose label of the activity chain's key ([`crate::auth::derive_key`]). Changing it orphans every row.
pub const ACTIVITY_KEY_PURPOSE: &str = "omserver activity chain";

/// Field names whose values are never recorded, wherever they appear in a change.
const SECRETS: [&str; 5] = ["password", "token", "secret", "csrf_token", "smtp_password"];

/// Where a change came from.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The client's address, as the server saw it.
    pub address: String,
    pub user_agent: String,
}

/// Who made a change: a principal (user, token), a part of the server (`schedule:NAME`, `server`), or the
/// command line (`cli:USER`).
#[derive(Debug, Clone)]
pub struct Actor {
    pub name: String,
    /// How it proved who it is: `session 12`, `token 5 (ci)`, or empty for the server's own parts.
    pub credential: String,
    pub origin: Origin,
}

impl Actor {
    pub fn of(principal: &Principal, origin: Origin) -> Actor {
        let credential = match &principal.credential {
            Credential::Session { id } => format!("session {id}"),
            Credential::Token { id, name } => format!("token {id} ({name})"),
        };
        Actor { name: principal.name.clone(), credential, origin }
    }

    /// A part of the server acting on its own (`server`, `schedule:nightly`).
    pub fn internal(name: &str) -> Actor {
        Actor { name: name.to_owned(), credential: String::new(), origin: Origin::default() }
    }
}

/// What one record says besides who: the action (`user.add`), its object (`user alice`), the changed fields and
/// the outcome (`ok`, or why it was refused or failed).
#[derive(Debug, Clone)]
pub struct Change {
    pub action: &'static str,
    pub object: String,
    pub changes: Map<String, Value>,
    pub outcome: String,
}

impl Change {
    pub fn ok(action: &'static str, object: impl Into<String>) -> Change {
        Change { action, object: object.into(), changes: Map::new(), outcome: "ok".into() }
    }

    /// A field set to `value` (a new object's fields, a request's arguments).
    pub fn with(mut self, field: &str, value: impl Serialize) -> Change {
        self.changes.insert(field.to_owned(), redacted(field, serde_json::to_value(value).unwrap_or(Value::Null)));
        self
    }

    /// A field that went from `before` to `after`; left out when they are equal.
    pub fn diff(mut self, field: &str, before: impl Serialize, after: impl Serialize) -> Change {
        let (before, after) =
            (serde_json::to_value(before).unwrap_or(Value::Null), serde_json::to_value(after).unwrap_or(Value::Null));
        if before != after {
            self.changes.insert(field.to_owned(), redacted(field, Value::Array(vec![before, after])));
        }
        self
    }

    /// Every field of `value`, a struct or map: what a new object was made with, or what a removed one held.
    pub fn fields(mut self, value: impl Serialize) -> Change {
        for (field, value) in object_of(value) {
            let value = redacted(&field, value);
            self.changes.insert(field, value);
        }
        self
    }

    /// Each field of two structs or maps that differs, as `[before, after]`: what an edit changed.
    pub fn changed_fields(mut self, before: impl Serialize, after: impl Serialize) -> Change {
        let (mut before, after) = (object_of(before), object_of(after));
        for (field, after) in after {
            let before = before.remove(&field).unwrap_or(Value::Null);
            if before != after {
                let pair = redacted(&field, Value::Array(vec![before, after]));
                self.changes.insert(field, pair);
            }
        }
        for (field, before) in before {
            let pair = redacted(&field, Value::Array(vec![before, Value::Null]));
            self.changes.insert(field, pair);
        }
        self
    }

    /// The same record with another outcome (`refused: …`, `failed: …`).
    pub fn outcome(mut self, outcome: impl Into<String>) -> Change {
        self.outcome = outcome.into();
        self
    }
}

/// The fields of a struct or map; nothing for anything else.
fn object_of(value: impl Serialize) -> Map<String, Value> {
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// `value` with every secret field's value (at any depth) replaced by `"(secret)"`.
fn redacted(field: &str, value: Value) -> Value {
    if SECRETS.contains(&field) {
        return Value::String("(secret)".into());
    }
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = redacted(&k, v);
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(|v| redacted("", v)).collect()),
        other => other,
    }
}

/// Appends records to the chain.
#[derive(Clone)]
pub struct Activity {
    store: Store,
    key: ChainKey,
}

impl std::fmt::Debug for Activity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Activity { key: <hidden> }")
    }
}

impl Activity {
    /// `key`: the activity key derived from the server's secret ([`ACTIVITY_KEY_PURPOSE`]).
    pub fn new(store: Store, key: &[u8]) -> Activity {
        Activity { store, key: ChainKey::new(key) }
    }

    /// Walks the whole log ([`verify`]).
    pub async fn verify(&self) -> Result<ActivityReport, StoreError> {
        verify_with(&self.store, &self.key).await
    }

    /// Records `change` by `actor`. Never fails the caller: a record that could not be stored is logged.
    pub async fn record(&self, actor: &Actor, change: Change) {
        let entry = NewActivity {
            at: now_ms(),
            actor: actor.name.clone(),
            credential: actor.credential.clone(),
            address: actor.origin.address.clone(),
            user_agent: actor.origin.user_agent.chars().take(512).collect(),
            action: change.action.to_owned(),
            object: change.object.chars().take(512).collect(),
            changes: Value::Object(change.changes).to_string(),
            outcome: change.outcome.chars().take(512).collect(),
        };
        let key = self.key.clone();
        match self.store.append_activity(&entry, |prev| seal(&key, &entry, prev)).await {
            Ok(id) => {
                tracing::debug!(activity_id = id, action = %entry.action, actor = %entry.actor, "activity recorded")
            }
            Err(err) => {
                metrics::counter!("omserver_activity_unrecorded_total").increment(1);
                tracing::error!(action = %entry.action, actor = %entry.actor, object = %entry.object, error = %err,
                    "a change could not be recorded in the activity log");
            }
        }
    }
}

/// The MAC of a row: the previous row's hash, then every field but `id` and the hashes, each length-prefixed.
fn seal(key: &ChainKey, e: &NewActivity, prev: &str) -> String {
    key.mark(
        "activity",
        &[
            prev.as_bytes(),
            &e.at.to_le_bytes(),
            e.actor.as_bytes(),
            e.credential.as_bytes(),
            e.address.as_bytes(),
            e.user_agent.as_bytes(),
            e.action.as_bytes(),
            e.object.as_bytes(),
            e.changes.as_bytes(),
            e.outcome.as_bytes(),
        ],
    )
}

/// What `verify` found wrong with the activity log.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct ActivityReport {
    pub rows: u64,
    /// Each problem, with the id of the row it was found at.
    pub problems: Vec<ActivityProblem>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ActivityProblem {
    pub id: i64,
    pub problem: String,
}

/// Walks the whole chain: each row's hash must be its own fields' MAC on the previous row's hash, and the last row
/// must be the head.
pub async fn verify(store: &Store, key: &[u8]) -> Result<ActivityReport, StoreError> {
    verify_with(store, &ChainKey::new(key)).await
}

async fn verify_with(store: &Store, key: &ChainKey) -> Result<ActivityReport, StoreError> {
    const PAGE: i64 = 5000;
    let mut report = ActivityReport::default();
    let (mut prev, mut last) = (ACTIVITY_GENESIS.to_owned(), 0);
    loop {
        let rows = store.activity_after(last, PAGE).await?;
        for row in &rows {
            report.rows += 1;
            if row.prev_hash != prev {
                report.problems.push(ActivityProblem {
                    id: row.id,
                    problem: "does not follow the row before it: a row was deleted or inserted here".into(),
                });
            }
            if seal(key, &row.entry, &row.prev_hash) != row.row_hash {
                report.problems.push(ActivityProblem { id: row.id, problem: "its fields were changed".into() });
            }
            prev.clone_from(&row.row_hash);
            last = row.id;
        }
        if (rows.len() as i64) < PAGE {
            break;
        }
    }
    let (head_id, head_hash) = store.activity_head().await?;
    if head_id != last || head_hash != prev {
        report.problems.push(ActivityProblem {
            id: head_id,
            problem: format!(
                "the log ends at row {last}, but its head says row {head_id}: the newest rows were deleted"
            ),
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_never_recorded_at_any_depth() {
        let change = Change::ok("user.add", "user alice")
            .with("role", "operator")
            .with("password", "hunter2hunter2")
            .with("channel", serde_json::json!({ "smtp_password": "x", "host": "mail" }))
            .diff("role", "viewer", "viewer")
            .changed_fields(
                serde_json::json!({ "name": "a", "url": "http://x", "secret": "s1", "gone": 1 }),
                serde_json::json!({ "name": "a", "url": "http://y", "secret": "s2" }),
            );
        assert_eq!(
            Value::Object(change.changes),
            serde_json::json!({ "role": "operator", "password": "(secret)",
                                "channel": { "smtp_password": "(secret)", "host": "mail" },
                                "url": ["http://x", "http://y"], "secret": "(secret)", "gone": [1, null] })
        );
    }
}
