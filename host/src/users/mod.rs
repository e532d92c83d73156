//! Console users and their sessions: adding, listing, changing passwords, disabling; logging in (with
//! throttling) and out; checking a session cookie.
//!
//! - `password.rs`: argon2id on blocking threads, the rules for new passwords, generated passwords.
//! - `throttle.rs`: failed logins slowed per user name and per address, counted in the database so that every
//!   server of it counts alike (the rule is in its docs).
//!
//! A session id is 32 random bytes shown once, in the cookie; the database keeps only an HMAC of it under a key
//! derived from the secret key (as for tokens). Each session also has a CSRF token, which the console sends
//! back with every state-changing request (checked in `http/session.rs`).

pub mod password;
pub mod throttle;

use std::{fmt, net::IpAddr, time::Duration};

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::{
    access,
    auth::{Credential, Principal, Role},
    store::{now_ms, InvalidUserName, Store, StoreError, UserName, UserRow},
};
pub use password::{PasswordError, Passwords};
pub use throttle::Throttle;

/// The purpose under which session-id hashes are keyed ([`crate::auth::derive_key`]).
pub const SESSION_KEY_PURPOSE: &str = "omserver session id";

/// How long sessions live.
#[derive(Debug, Clone, Copy)]
pub struct SessionSettings {
    /// A session unused this long is over.
    pub idle_timeout: Duration,
    /// A session this old is over, however busy.
    pub max_age: Duration,
}

impl SessionSettings {
    /// `last_seen_at` is written at most this often: once a minute, or a quarter of the idle timeout when that
    /// is shorter (so that a session in use never looks idle). A session therefore ends between
    /// `idle_timeout - interval` and `idle_timeout` after its last use.
    pub fn touch_interval(&self) -> Duration {
        (self.idle_timeout / 4).min(Duration::from_secs(60))
    }
}

/// Why a user operation failed.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error(transparent)]
    InvalidName(#[from] InvalidUserName),
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error("unknown role {0:?} (viewer, operator or admin)")]
    InvalidRole(String),
    #[error("no user named {0:?}")]
    NotFound(String),
    /// The change would leave no enabled admin to manage users from the console.
    #[error("{0} is the last enabled admin; make another user admin first")]
    LastAdmin(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a login failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Wrong name or password, or a disabled user: one answer for all, so that it tells nothing.
    #[error("invalid user name or password")]
    Invalid,
    #[error("too many failed logins; try again in {} s", .0.as_secs().max(1))]
    Throttled(Duration),
    /// The failed-login counts could not be read: the attempt is refused, uncounted (see [`Users::login`]).
    #[error("login is unavailable: the failed-login counts cannot be read; try again later")]
    ThrottleUnavailable(#[source] StoreError),
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The name of a user that should exist: one no user can have is simply not found (`/api/users/%C2%84` is a 404,
/// like any other unknown name).
fn existing(name: &str) -> Result<UserName, UserError> {
    UserName::parse(name).map_err(|_| UserError::NotFound(name.to_owned()))
}

/// A role a person may have, as a request names it (agent is for audit agents' tokens only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PersonRole {
    Viewer,
    Operator,
    Admin,
}

impl From<PersonRole> for Role {
    fn from(role: PersonRole) -> Role {
        match role {
            PersonRole::Viewer => Role::Viewer,
            PersonRole::Operator => Role::Operator,
            PersonRole::Admin => Role::Admin,
        }
    }
}

/// A role a person may have: viewer, operator or admin (agent is for audit agents' tokens only).
pub fn user_role(text: &str) -> Result<Role, UserError> {
    match text.trim().parse::<Role>() {
        Ok(role) if role >= Role::Viewer => Ok(role),
        _ => Err(UserError::InvalidRole(text.to_owned())),
    }
}

/// A session just opened: the id goes into the cookie and is never seen again.
pub struct NewSession {
    pub id: String,
    pub csrf_token: String,
    pub user: String,
    pub role: Role,
}

impl fmt::Debug for NewSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewSession").field("user", &self.user).field("role", &self.role).finish_non_exhaustive()
    }
}

/// What a sweep deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub sessions: u64,
    /// Failed-login counts forgotten.
    pub failure_counts: u64,
}

/// A live session as a request sees it.
#[derive(Debug, Clone)]
pub struct Session {
    pub principal: Principal,
    pub csrf_token: String,
}

/// Users, sessions and login throttling.
pub struct Users {
    store: Store,
    key: Vec<u8>,
    settings: SessionSettings,
    passwords: Passwords,
    throttle: Throttle,
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Users").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl Users {
    /// `secret` is the server's secret key; session hashes use a key derived from it.
    pub fn new(store: Store, secret: &[u8], settings: SessionSettings) -> Users {
        Users {
            key: crate::auth::derive_key(secret, SESSION_KEY_PURPOSE),
            settings,
            passwords: Passwords::default(),
            throttle: Throttle::new(store.clone(), secret, throttle::Policy::default()),
            store,
        }
    }

    pub fn settings(&self) -> SessionSettings {
        self.settings
    }

    pub fn passwords(&self) -> &Passwords {
        &self.passwords
    }

    /// Adds a user with `password` (checked against the rules) and `role`.
    pub async fn add(&self, name: &str, password: &str, role: Role) -> Result<UserRow, UserError> {
        let name = UserName::parse(name)?;
        let role = user_role(role.as_str())?;
        password::check_new(password)?;
        let hash = self.passwords.hash(password).await?;
        Ok(self.store.insert_user(&name, &hash, role.as_str()).await?)
    }

    pub async fn list(&self) -> Result<Vec<UserRow>, UserError> {
        Ok(self.store.list_users().await?)
    }

    /// The user named `name` (in any spelling).
    pub async fn get(&self, name: &str) -> Result<UserRow, UserError> {
        let parsed = existing(name)?;
        self.store.user_by_name(&parsed).await?.ok_or_else(|| UserError::NotFound(parsed.to_string()))
    }

    /// Sets a new password and ends the user's sessions (whoever had the old one is logged out).
    pub async fn set_password(&self, name: &str, password: &str) -> Result<(), UserError> {
        let name = existing(name)?;
        password::check_new(password)?;
        let hash = self.passwords.hash(password).await?;
        if !self.store.set_user_password(&name, &hash).await? {
            return Err(UserError::NotFound(name.to_string()));
        }
        Ok(())
    }

    /// Gives a user another role, from its next request on (sessions and tokens are capped by it when used).
    /// The last enabled admin keeps theirs.
    pub async fn set_role(&self, name: &str, role: Role) -> Result<(), UserError> {
        let name = existing(name)?;
        let role = user_role(role.as_str())?;
        if role != Role::Admin {
            self.keep_an_admin(&name).await?;
        }
        if !self.store.set_user_role(&name, role.as_str()).await? {
            return Err(UserError::NotFound(name.to_string()));
        }
        Ok(())
    }

    /// Lets a disabled user log in again; its tokens work again too.
    pub async fn enable(&self, name: &str) -> Result<(), UserError> {
        let name = existing(name)?;
        if !self.store.enable_user(&name).await? {
            return Err(UserError::NotFound(name.to_string()));
        }
        Ok(())
    }

    /// Refuses to take `name`'s admin rights when nobody else enabled has them. Checked before the change, not
    /// in its transaction: two admins demoting each other at the same instant could both pass, and the CLI
    /// (`omserver user add`, run on the server) is the way back in.
    async fn keep_an_admin(&self, name: &UserName) -> Result<(), UserError> {
        let admins: Vec<UserRow> = self.store.list_users().await?.into_iter().filter(is_enabled_admin).collect();
        match admins.as_slice() {
            [only] if only.name == name.as_str() => Err(UserError::LastAdmin(name.to_string())),
            _ => Ok(()),
        }
    }

    /// Disables a user: its sessions end now and its tokens are refused from the next request on. The last
    /// enabled admin cannot be disabled.
    pub async fn disable(&self, name: &str) -> Result<(), UserError> {
        let name = existing(name)?;
        self.keep_an_admin(&name).await?;
        if !self.store.disable_user(&name).await? {
            return Err(UserError::NotFound(name.to_string()));
        }
        Ok(())
    }

    /// Checks a name and password from `client` and opens a new session. `previous` is a session id the client
    /// sent along (its cookie): it is ended on success, so every login starts from a fresh id.
    pub async fn login(
        &self,
        name: &str,
        password: &str,
        client: IpAddr,
        previous: Option<&str>,
    ) -> Result<NewSession, LoginError> {
        let user_key = throttle::Key::user(name);
        let keys = [user_key.clone(), throttle::Key::address(client)];
        match self.throttle.check(&keys, now_ms()).await {
            Ok(None) => {}
            Ok(Some(wait)) => {
                metrics::counter!("omserver_login_throttled_total").increment(1);
                tracing::info!(client = %client, "login throttled");
                return Err(LoginError::Throttled(wait));
            }
            // Fail closed, uncounted (503): a broken table grants no unthrottled guesses and locks nobody out after.
            Err(err) => {
                tracing::warn!(error = %err, client = %client, "login refused: the failed-login counts cannot be read");
                return Err(LoginError::ThrottleUnavailable(err));
            }
        }
        let user = match UserName::parse(name) {
            Ok(parsed) => self.store.user_by_name(&parsed).await?,
            Err(_) => None,
        };
        // A password no one can have set is refused without hashing a megabyte; its length says nothing of users.
        let matched = password.chars().count() <= password::MAX_LEN
            && self.passwords.verify(password, user.as_ref().map(|u| u.password_hash.as_str())).await?;
        let role = user.as_ref().and_then(|u| user_role(&u.role).ok());
        let user = match (matched, user, role) {
            (true, Some(user), Some(role)) if user.disabled_at.is_none() => (user, role),
            _ => {
                if let Err(err) = self.throttle.failed(&keys, now_ms()).await {
                    // The answer stays 401 (the password was wrong); the next check reads the same table.
                    tracing::warn!(error = %err, client = %client, "could not count a failed login");
                }
                metrics::counter!("omserver_login_failures_total").increment(1);
                // The name as typed may be a password typed into the wrong field: it is not logged.
                tracing::info!(client = %client, "login failed");
                return Err(LoginError::Invalid);
            }
        };
        let (user, role) = user;
        if let Err(err) = self.throttle.succeeded(&user_key).await {
            // The login stands; the name's old count only makes its next failures wait sooner.
            tracing::warn!(error = %err, user = %user.name, "could not reset a user's failed-login count");
        }
        if let Some(previous) = previous {
            self.logout(previous).await?;
        }
        let id = random_hex();
        let csrf_token = random_hex();
        self.store.insert_session(&self.hash(&id), user.id, &csrf_token, now_ms()).await?;
        tracing::info!(user = %user.name, client = %client, "logged in");
        Ok(NewSession { id, csrf_token, user: user.name, role })
    }

    /// Ends the session `id`, if it exists.
    pub async fn logout(&self, id: &str) -> Result<(), StoreError> {
        if is_session_id(id) {
            self.store.delete_session(&self.hash(id)).await?;
        }
        Ok(())
    }

    /// The live session `id`, if any: not idle longer than the idle timeout, not older than the maximum age, its
    /// user not disabled. A session found over is deleted at once.
    pub async fn authenticate(&self, id: &str) -> Result<Option<Session>, StoreError> {
        if !is_session_id(id) {
            return Ok(None);
        }
        let hash = self.hash(id);
        let Some(row) = self.store.session_by_hash(&hash).await? else {
            return Ok(None);
        };
        let now = now_ms();
        let idle = now - row.last_seen_at > millis(self.settings.idle_timeout);
        let old = now - row.created_at > millis(self.settings.max_age);
        let role = user_role(&row.user_role).ok();
        let Some(role) = role.filter(|_| !idle && !old && row.user_disabled_at.is_none()) else {
            self.store.delete_session(&hash).await?;
            return Ok(None);
        };
        if now - row.last_seen_at >= millis(self.settings.touch_interval()) {
            self.store.touch_session(row.id, now).await?;
        }
        let scope = access::scope_of(&self.store, row.user_id, role).await?;
        let principal = Principal {
            name: row.user_name,
            role,
            host_id: None,
            user_id: Some(row.user_id),
            credential: Credential::Session { id: row.id },
            scope,
        };
        Ok(Some(Session { principal, csrf_token: row.csrf_token }))
    }

    /// Deletes expired sessions and forgotten throttle counts; run periodically by each server.
    pub async fn sweep(&self) -> Result<Swept, StoreError> {
        let now = now_ms();
        let sessions = self
            .store
            .delete_expired_sessions(now - millis(self.settings.idle_timeout), now - millis(self.settings.max_age))
            .await?;
        let failure_counts = self.throttle.sweep(now).await?;
        Ok(Swept { sessions, failure_counts })
    }

    fn hash(&self, id: &str) -> String {
        // HMAC accepts keys of any length; new_from_slice cannot fail for it.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        mac.update(id.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Session ids are 64 lower-case hex digits; anything else never reaches the database.
fn is_session_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_enabled_admin(user: &UserRow) -> bool {
    user.role == Role::Admin.as_str() && user.disabled_at.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> SessionSettings {
        SessionSettings { idle_timeout: Duration::from_secs(1800), max_age: Duration::from_secs(43200) }
    }

    #[test]
    fn touch_interval_is_a_minute_or_a_quarter_of_the_idle_timeout() {
        assert_eq!(settings().touch_interval(), Duration::from_secs(60));
        let short = SessionSettings { idle_timeout: Duration::from_secs(2), ..settings() };
        assert_eq!(short.touch_interval(), Duration::from_millis(500));
    }

    #[test]
    fn only_people_roles_for_users() {
        assert_eq!(user_role("operator").unwrap(), Role::Operator);
        assert!(matches!(user_role("agent"), Err(UserError::InvalidRole(_))));
        assert!(matches!(user_role("root"), Err(UserError::InvalidRole(_))));
    }

    #[tokio::test]
    async fn login_opens_a_session_and_logout_ends_it() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        let users = Users::new(store.clone(), b"secret", settings());
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        users.add("Alice", "correct horse battery", Role::Operator).await.unwrap();
        assert!(matches!(users.add("ALICE", "another long password", Role::Viewer).await, Err(UserError::Store(_))));
        assert!(matches!(users.add("bob", "short", Role::Viewer).await, Err(UserError::Password(_))));
        assert!(matches!(users.login("alice", "wrong password!", client, None).await, Err(LoginError::Invalid)));
        assert!(matches!(users.login("nobody", "wrong password!", client, None).await, Err(LoginError::Invalid)));

        let session = users.login(" ALICE ", "correct horse battery", client, None).await.unwrap();
        assert_eq!((session.user.as_str(), session.role), ("alice", Role::Operator));
        let seen = users.authenticate(&session.id).await.unwrap().expect("a live session");
        assert_eq!((seen.principal.name.as_str(), seen.csrf_token.as_str()), ("alice", session.csrf_token.as_str()));
        assert!(users.authenticate(&session.csrf_token).await.unwrap().is_none(), "the CSRF token is no session id");

        // A second login with the first cookie ends the first session.
        let second = users.login("alice", "correct horse battery", client, Some(&session.id)).await.unwrap();
        assert_ne!(second.id, session.id);
        assert!(users.authenticate(&session.id).await.unwrap().is_none());
        assert!(users.authenticate(&second.id).await.unwrap().is_some());
        assert_eq!(store.session_count().await.unwrap(), 1, "only hashes are stored, one per live session");

        users.logout(&second.id).await.unwrap();
        assert!(users.authenticate(&second.id).await.unwrap().is_none());

        let third = users.login("alice", "correct horse battery", client, None).await.unwrap();
        users.disable("alice").await.unwrap();
        assert!(users.authenticate(&third.id).await.unwrap().is_none(), "disabling ends sessions");
        assert!(matches!(users.login("alice", "correct horse battery", client, None).await, Err(LoginError::Invalid)));
    }
}
