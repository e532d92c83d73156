//! API tokens and roles (console users and sessions: [`crate::users`]). A token is 32 random bytes shown once; the database keeps only an HMAC of it under the
//! server's secret key, so a leaked database does not yield usable tokens.

use std::{fmt, path::Path, str::FromStr};

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::{
    access::{self, Scope},
    store::{now_ms, Store, StoreError, UserRow},
};

/// What a token may do. Each role includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An audit agent: may only send its own host's audit events. Below every person's role.
    Agent,
    /// Read modules, hosts, jobs, audit events.
    Viewer,
    /// And run and cancel jobs.
    Operator,
    /// And change the inventory and everything else.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "agent" => Ok(Role::Agent),
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role {other:?} (viewer, operator or admin)")),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who made a request.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Who, for the record (a job's `created_by`, logs): the user's name, or the token's own name when the token
    /// belongs to no user.
    pub name: String,
    /// What the request may do: for a user's token the lower of the token's and the user's role.
    pub role: Role,
    /// For agent tokens: the inventory host they speak for.
    pub host_id: Option<i64>,
    /// The user behind the request, if any.
    pub user_id: Option<i64>,
    /// How the caller proved who it is.
    pub credential: Credential,
    /// Which hosts and modules its role applies to: its user's grants, capped by `role` ([`crate::access`]).
    pub scope: Scope,
}

/// A bearer token or a console session.
#[derive(Debug, Clone)]
pub enum Credential {
    Token { id: i64, name: String },
    Session { id: i64 },
}

/// Why a token was not created or revoked.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// A token never has more rights than its user (or than whoever creates it).
    #[error("a token cannot have more rights than its user ({0})")]
    ExceedsUser(Role),
    #[error("token {0} not found")]
    NotFound(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A token's `last_used_at` is written at most this often: a write per request would put the agents' ingest
/// path behind a row lock for nothing.
const TOUCH_INTERVAL_MS: i64 = 60_000;

/// Issues and checks tokens.
#[derive(Clone)]
pub struct Tokens {
    store: Store,
    key: Vec<u8>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tokens { key: <hidden> }")
    }
}

impl Tokens {
    pub fn new(store: Store, key: Vec<u8>) -> Tokens {
        Tokens { store, key }
    }

    /// Creates a token and returns it: the only time it exists outside the caller.
    pub async fn create(&self, name: &str, role: Role) -> Result<String, StoreError> {
        let token = new_token();
        self.store.insert_token(name, &self.hash(&token), role.as_str()).await?;
        Ok(token)
    }

    /// Creates an agent token bound to one inventory host and returns it.
    pub async fn create_for_host(&self, name: &str, host_id: i64) -> Result<String, StoreError> {
        let token = new_token();
        self.store.insert_host_token(name, &self.hash(&token), host_id).await?;
        Ok(token)
    }

    /// Creates a token belonging to `owner` (or to no one) and returns its id and the token. Its role may not
    /// exceed the owner's.
    pub async fn create_owned(
        &self,
        name: &str,
        role: Role,
        owner: Option<&UserRow>,
    ) -> Result<(i64, String), TokenError> {
        if let Some(owner) = owner {
            let owner_role: Role = owner.role.parse().map_err(|_| TokenError::ExceedsUser(Role::Agent))?;
            if role > owner_role {
                return Err(TokenError::ExceedsUser(owner_role));
            }
        }
        let token = new_token();
        let id = self.store.insert_user_token(name, &self.hash(&token), role.as_str(), owner.map(|u| u.id)).await?;
        Ok((id, token))
    }

    /// Revokes token `id` for `by`: its own token, a token of its user, or any token for an admin. A token `by`
    /// may not revoke is reported as not found, like one that does not exist.
    pub async fn revoke(&self, id: i64, by: &Principal) -> Result<(), TokenError> {
        let row = self.store.token_by_id(id).await?.ok_or(TokenError::NotFound(id))?;
        let own = matches!(&by.credential, Credential::Token { id: mine, .. } if *mine == id)
            || (by.user_id.is_some() && row.user_id == by.user_id);
        if !own && by.role < Role::Admin {
            return Err(TokenError::NotFound(id));
        }
        if !self.store.revoke_token(id).await? {
            return Err(TokenError::NotFound(id));
        }
        Ok(())
    }

    /// The principal behind `token`, if it is live. A token of a disabled user is refused; a user's token acts
    /// with the lower of its own and its user's role.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Principal>, StoreError> {
        // Cheap shape check first: garbage never reaches the database.
        if !token.starts_with("oms_") || token.len() != 68 {
            return Ok(None);
        }
        let Some(row) = self.store.token_by_hash(&self.hash(token)).await? else {
            return Ok(None);
        };
        let Ok(mut role) = row.role.parse::<Role>() else {
            tracing::error!(token_id = row.id, role = %row.role, "token has an unknown role; refusing it");
            return Ok(None);
        };
        let mut name = row.name.clone();
        let mut scope = Scope::All;
        if let Some(user_id) = row.user_id {
            // A user's token: the LEFT JOIN found the user (the foreign key guarantees it exists).
            if row.user_disabled_at.is_some() {
                return Ok(None);
            }
            let Some(user_role) = row.user_role.as_deref().and_then(|r| r.parse::<Role>().ok()) else {
                tracing::error!(token_id = row.id, "token's user has an unknown role; refusing it");
                return Ok(None);
            };
            role = role.min(user_role);
            name = row.user_name.clone().unwrap_or(name);
            scope = access::scope_of(&self.store, user_id, role).await?;
        }
        let now = now_ms();
        if row.last_used_at.is_none_or(|t| now - t >= TOUCH_INTERVAL_MS) {
            // Off the request's path: the write may wait behind the audit writer's lock on SQLite.
            let store = self.store.clone();
            let id = row.id;
            tokio::spawn(async move {
                if let Err(err) = store.touch_token(id, now, now - TOUCH_INTERVAL_MS).await {
                    tracing::warn!(token_id = id, error = %err, "could not record the token's last use");
                }
            });
        }
        Ok(Some(Principal {
            name,
            role,
            host_id: row.host_id,
            user_id: row.user_id,
            credential: Credential::Token { id: row.id, name: row.name },
            scope,
        }))
    }

    fn hash(&self, token: &str) -> String {
        // HMAC accepts keys of any length; new_from_slice cannot fail for it.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        mac.update(token.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// A key for one purpose derived from the secret key, so that a MAC made for one purpose (say, the audit chain)
/// can never stand in for another (a token hash).
pub fn derive_key(secret: &[u8], purpose: &str) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(purpose.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("oms_{}", hex::encode(bytes))
}

/// The configured secret key, or the one generated into `state_dir/secret_key` on first start.
pub fn secret_key(configured: Option<&str>, state_dir: &Path) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(key) = configured.filter(|k| !k.is_empty()) {
        return Ok(key.as_bytes().to_vec());
    }
    let path = state_dir.join("secret_key");
    match std::fs::read_to_string(&path) {
        Ok(key) if !key.trim().is_empty() => return Ok(key.trim().as_bytes().to_vec()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(state_dir)?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let key = hex::encode(bytes);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
    std::io::Write::write_all(&mut file, key.as_bytes())?;
    file.sync_all()?;
    Ok(key.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tokens_round_trip_and_only_hashes_are_stored() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        let tokens = Tokens::new(store.clone(), b"k1".to_vec());
        let token = tokens.create("ci", Role::Operator).await.unwrap();
        let who = tokens.authenticate(&token).await.unwrap().expect("fresh token works");
        assert_eq!((who.name.as_str(), who.role), ("ci", Role::Operator));
        assert!(store.token_by_hash(&token).await.unwrap().is_none(), "the plain token is not stored");

        let other_key = Tokens::new(store, b"k2".to_vec());
        assert!(other_key.authenticate(&token).await.unwrap().is_none(), "the hash is keyed");
        let mut forged = token.clone();
        forged.replace_range(10..11, if &token[10..11] == "0" { "1" } else { "0" });
        assert!(tokens.authenticate(&forged).await.unwrap().is_none());
        assert!(tokens.authenticate("Bearer nonsense").await.unwrap().is_none());
    }

    #[test]
    fn generated_key_persists() {
        let dir = tempfile::tempdir().unwrap();
        let first = secret_key(None, dir.path()).unwrap();
        assert_eq!(first, secret_key(None, dir.path()).unwrap());
        assert_eq!(secret_key(Some("configured"), dir.path()).unwrap(), b"configured");
    }
}
