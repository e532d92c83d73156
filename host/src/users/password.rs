//! Passwords: argon2id (the crate's defaults, OWASP's recommended 19 MiB, 2 passes, 1 lane), hashed and checked
//! on blocking threads, a few at a time.

use std::sync::Arc;

use argon2::{Argon2, PasswordHasher as _, PasswordVerifier as _};
use rand::Rng;
use tokio::sync::{OnceCell, Semaphore};

/// The shortest password accepted. Length is what makes a password hard to guess; NIST SP 800-63B asks for at
/// least 8 and no composition rules. 12 is what we ask because a stolen hash is attacked offline, where the
/// throttling of logins does not help: 12 characters keep even lower-case-only passwords out of reach of a
/// rented GPU farm at these argon2 parameters, while staying typeable.
pub const MIN_LEN: usize = 12;

/// The longest password accepted, in characters (as the API's document counts them): more buys nothing, and it
/// bounds what one login makes us hash (4 KiB at most).
pub const MAX_LEN: usize = 1024;

/// Why a password was not accepted or could not be processed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("a password has at least {MIN_LEN} characters")]
    TooShort,
    #[error("a password has at most {MAX_LEN} characters")]
    TooLong,
    #[error("a password cannot contain control characters (such as a newline)")]
    ControlCharacter,
    #[error("password hashing: {0}")]
    Hashing(String),
}

/// Checks a new password against the rules above.
pub fn check_new(password: &str) -> Result<(), PasswordError> {
    if password.chars().count() > MAX_LEN {
        return Err(PasswordError::TooLong);
    }
    if password.chars().any(char::is_control) {
        return Err(PasswordError::ControlCharacter);
    }
    if password.chars().count() < MIN_LEN {
        return Err(PasswordError::TooShort);
    }
    Ok(())
}

/// A random password: 24 letters and digits (about 143 bits), printed once by whoever asked for it.
pub fn generate() -> String {
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(24).map(char::from).collect()
}

/// Hashes and verifies passwords off the async runtime.
#[derive(Debug, Clone)]
pub struct Passwords {
    /// Each hash takes 19 MiB and a core for tens of milliseconds: without a bound, a burst of logins would
    /// take all of the blocking pool's threads and memory.
    permits: Arc<Semaphore>,
    /// The hash checked when the user does not exist, so that an unknown name costs the same time as a wrong
    /// password (no user enumeration by timing). Made on first need with the current parameters.
    decoy: Arc<OnceCell<String>>,
}

impl Default for Passwords {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Passwords { permits: Arc::new(Semaphore::new(cores.clamp(1, 8))), decoy: Arc::new(OnceCell::new()) }
    }
}

impl Passwords {
    /// The PHC string (`$argon2id$v=19$…`) of `password` under a fresh random salt.
    pub async fn hash(&self, password: &str) -> Result<String, PasswordError> {
        let password = password.to_owned();
        self.blocking(move || {
            Argon2::default()
                .hash_password(password.as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| PasswordError::Hashing(e.to_string()))
        })
        .await
    }

    /// True when `password` matches `hash`. With `hash` `None` (no such user) the same work is done against a
    /// decoy hash and the answer is false.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> Result<bool, PasswordError> {
        let (hash, real) = match hash {
            Some(h) => (h.to_owned(), true),
            None => (self.decoy().await?.to_owned(), false),
        };
        let password = password.to_owned();
        let matched = self
            .blocking(move || match Argon2::default().verify_password(password.as_bytes(), hash.as_str()) {
                Ok(()) => Ok(true),
                Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
                Err(e) => Err(PasswordError::Hashing(e.to_string())),
            })
            .await?;
        Ok(matched && real)
    }

    /// Makes the decoy hash now, so that the first login of an unknown name is not slower than the others.
    pub async fn warm_up(&self) -> Result<(), PasswordError> {
        self.decoy().await.map(|_| ())
    }

    async fn decoy(&self) -> Result<&str, PasswordError> {
        self.decoy.get_or_try_init(|| async { self.hash(&generate()).await }).await.map(String::as_str)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, PasswordError> + Send + 'static,
    ) -> Result<T, PasswordError> {
        let _permit = self.permits.acquire().await.map_err(|_| PasswordError::Hashing("hashing has stopped".into()))?;
        tokio::task::spawn_blocking(work).await.map_err(|e| PasswordError::Hashing(e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_differ_by_salt() {
        let passwords = Passwords::default();
        let one = passwords.hash("correct horse battery").await.unwrap();
        let two = passwords.hash("correct horse battery").await.unwrap();
        assert!(one.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{one}");
        assert_ne!(one, two, "a fresh salt each time");
        assert!(passwords.verify("correct horse battery", Some(&one)).await.unwrap());
        assert!(!passwords.verify("correct horse batterY", Some(&one)).await.unwrap());
        assert!(!passwords.verify("correct horse battery", None).await.unwrap(), "no user: never a match");
        assert!(passwords.verify("x", Some("not a hash")).await.is_err());
    }

    #[tokio::test]
    async fn an_unknown_user_costs_as_much_as_a_wrong_password() {
        let passwords = Passwords::default();
        passwords.warm_up().await.unwrap();
        let hash = passwords.hash("correct horse battery").await.unwrap();
        let time = |hash: Option<String>| {
            let passwords = passwords.clone();
            async move {
                let started = std::time::Instant::now();
                for _ in 0..5 {
                    passwords.verify("wrong password!", hash.as_deref()).await.unwrap();
                }
                started.elapsed()
            }
        };
        let (known, unknown) = (time(Some(hash)).await, time(None).await);
        let ratio = unknown.as_secs_f64() / known.as_secs_f64();
        assert!((0.5..2.0).contains(&ratio), "unknown {unknown:?} vs known {known:?}");
    }

    #[test]
    fn new_passwords_follow_the_rules() {
        assert!(matches!(check_new("short"), Err(PasswordError::TooShort)));
        assert!(matches!(check_new("elevenchars"), Err(PasswordError::TooShort)));
        check_new("twelve chars").unwrap();
        // Characters, not bytes: twelve two-byte letters pass, eleven do not.
        check_new(&"é".repeat(12)).unwrap();
        assert!(matches!(check_new(&"é".repeat(11)), Err(PasswordError::TooShort)));
        assert!(matches!(check_new("twelve chars\n"), Err(PasswordError::ControlCharacter)));
        assert!(matches!(check_new(&"x".repeat(MAX_LEN + 1)), Err(PasswordError::TooLong)));
        let generated = generate();
        assert_eq!(generated.len(), 24);
        check_new(&generated).unwrap();
        assert_ne!(generated, generate());
    }
}
