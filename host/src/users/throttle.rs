//! Slowing down password guessing, per user name and per client address, across every server of the database.
//!
//! How: each key (a user name as typed, normalised; a client address, IPv6 by its /64 because one machine gets a
//! whole /64) counts its failed logins. A count is forgotten 15 minutes after its last failure. Once a key has
//! `free` failures (5 for a user name, 20 for an address, since offices and NAT share one), every further
//! attempt must wait `2^(failures - free)` seconds after the last failure (1 s, 2 s, 4 s, …), capped at 5
//! minutes. An attempt too early is answered 429 with `Retry-After` and is not checked at all (costing no
//! hash). A successful login resets its user name's count, not its address's: otherwise one valid account would
//! let an address reset its own count between guesses at others. Unknown names are counted like known ones, so
//! throttling tells nothing about which names exist.
//!
//! Where: the counts are rows of the database (`store/throttle.rs`), which every server of it reads and writes, so
//! guesses spread over several servers are slowed as if all were sent to one. A failure is counted by one upsert
//! that increments the row in the database: servers counting at once lose no count. The rule itself is here,
//! [`Policy::wait`]: a pure function of a key's count, its last failure and the time. Times are Unix ms by each
//! server's clock, which should agree (NTP): a server whose clock is behind never moves a last failure back, and no
//! wait is longer than its back-off. As before, checking and counting are two steps: attempts that passed their
//! check while another's password was being hashed are still answered.
//!
//! What is stored: a subject per key, the HMAC of the key under a key derived from the secret key (the servers of
//! a database share it, as their tokens need), never the name: a name as typed may be a password typed into the
//! wrong field.
//!
//! Size: the table holds only keys with a recent failure. A count is forgotten `forget_after` after its last
//! failure and deleted by the next sweep (every minute, on each server); every row comes from a failed attempt,
//! which costs a password hash (one per core at a time), so the table holds at most what the servers can hash in
//! `forget_after` and a sweep interval. There is no bound on the number of keys, as memory once needed.

use std::{net::IpAddr, time::Duration};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::store::{Store, StoreError};

/// The purpose under which subjects are keyed ([`crate::auth::derive_key`]).
const THROTTLE_KEY_PURPOSE: &str = "omserver login throttle";

/// What is counted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    User(String),
    Address(IpAddr),
}

impl Key {
    /// The key of a user name as typed: trimmed and lower case, like stored names, at most 64 characters.
    pub fn user(typed: &str) -> Key {
        Key::User(typed.trim().to_lowercase().chars().take(64).collect())
    }

    /// The key of a client address: IPv4 (also IPv4-mapped IPv6) as is, IPv6 by its /64.
    pub fn address(ip: IpAddr) -> Key {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Key::Address(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                Key::Address(IpAddr::V6(prefix.into()))
            }
        }
    }

    fn free(&self, policy: &Policy) -> u32 {
        match self {
            Key::User(_) => policy.user_free,
            Key::Address(_) => policy.address_free,
        }
    }
}

/// The numbers of the rule in the module's documentation.
#[derive(Debug, Clone)]
pub struct Policy {
    pub user_free: u32,
    pub address_free: u32,
    pub forget_after: Duration,
    pub max_wait: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            user_free: 5,
            address_free: 20,
            forget_after: Duration::from_secs(15 * 60),
            max_wait: Duration::from_secs(5 * 60),
        }
    }
}

impl Policy {
    /// A count whose last failure is before this (Unix ms) is forgotten at `now`.
    pub fn forgotten_before(&self, now: i64) -> i64 {
        now.saturating_sub(millis(self.forget_after))
    }

    /// How long a key with `free` free failures, which has `failures` failures, the last at `last_failed_at`, must
    /// still wait at `now` (Unix ms) before its next attempt; `None` when it may try now.
    pub fn wait(&self, free: u32, failures: i64, last_failed_at: i64, now: i64) -> Option<Duration> {
        if last_failed_at < self.forgotten_before(now) || failures < i64::from(free) {
            return None;
        }
        let doublings = u32::try_from(failures - i64::from(free)).unwrap_or(u32::MAX).min(16);
        let backoff = Duration::from_secs(1u64 << doublings).min(self.max_wait);
        let left = last_failed_at.saturating_add(millis(backoff)).saturating_sub(now);
        u64::try_from(left).ok().filter(|&ms| ms > 0).map(|ms| Duration::from_millis(ms).min(backoff))
    }
}

/// Failed-login counts, kept in the database and shared by its servers.
pub struct Throttle {
    store: Store,
    /// Keys the subjects (derived from the secret key; never logged).
    key: Vec<u8>,
    policy: Policy,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle").field("policy", &self.policy).finish_non_exhaustive()
    }
}

impl Throttle {
    /// `secret` is the server's secret key; every server of a database must have the same to count alike.
    pub fn new(store: Store, secret: &[u8], policy: Policy) -> Throttle {
        Throttle { store, key: crate::auth::derive_key(secret, THROTTLE_KEY_PURPOSE), policy }
    }

    /// The longest any of `keys` must still wait at `now` (Unix ms); `None` when every one may try now.
    pub async fn check(&self, keys: &[Key], now: i64) -> Result<Option<Duration>, StoreError> {
        let subjects: Vec<String> = keys.iter().map(|key| self.subject(key)).collect();
        let rows = self.store.login_failures(&subjects.iter().map(String::as_str).collect::<Vec<_>>()).await?;
        let wait = keys
            .iter()
            .zip(&subjects)
            .filter_map(|(key, subject)| {
                let row = rows.iter().find(|row| &row.subject == subject)?;
                self.policy.wait(key.free(&self.policy), row.failures, row.last_failed_at, now)
            })
            .max();
        Ok(wait)
    }

    /// Counts a failed attempt at `now` (Unix ms) against each of `keys`.
    pub async fn failed(&self, keys: &[Key], now: i64) -> Result<(), StoreError> {
        let subjects: Vec<String> = keys.iter().map(|key| self.subject(key)).collect();
        let subjects: Vec<&str> = subjects.iter().map(String::as_str).collect();
        self.store.count_login_failure(&subjects, now, self.policy.forgotten_before(now)).await
    }

    /// A successful login: forgets `key`'s failures.
    pub async fn succeeded(&self, key: &Key) -> Result<(), StoreError> {
        self.store.forget_login_failures(&self.subject(key)).await
    }

    /// Deletes the counts nobody remembers any more at `now` (Unix ms; the periodic sweep); returns how many.
    pub async fn sweep(&self, now: i64) -> Result<u64, StoreError> {
        self.store.delete_login_failures_before(self.policy.forgotten_before(now)).await
    }

    /// The row's name for `key`: a keyed hash of its kind and value.
    fn subject(&self, key: &Key) -> String {
        // HMAC accepts keys of any length; new_from_slice cannot fail for it.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        match key {
            Key::User(name) => mac.update(format!("user:{name}").as_bytes()),
            Key::Address(ip) => mac.update(format!("address:{ip}").as_bytes()),
        }
        hex::encode(mac.finalize().into_bytes())
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    /// Some time, in Unix ms.
    const T0: i64 = 1_700_000_000_000;

    fn ms(seconds: u64) -> i64 {
        i64::try_from(seconds * 1000).unwrap()
    }

    async fn throttle() -> Throttle {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        Throttle::new(store, b"secret", Policy::default())
    }

    #[test]
    fn the_wait_doubles_after_the_free_failures_up_to_the_cap_and_is_forgotten() {
        let policy = Policy::default();
        assert_eq!(policy.wait(5, 4, T0, T0), None, "four of five free failures");
        assert_eq!(policy.wait(5, 5, T0, T0), Some(S));
        assert_eq!(policy.wait(5, 5, T0, T0 + 400), Some(Duration::from_millis(600)));
        assert_eq!(policy.wait(5, 5, T0, T0 + 1000), None);
        assert_eq!(policy.wait(5, 7, T0, T0), Some(4 * S));
        assert_eq!(policy.wait(5, 13, T0, T0), Some(Duration::from_secs(256)));
        assert_eq!(policy.wait(5, 14, T0, T0), Some(Duration::from_secs(300)), "capped at 5 minutes");
        assert_eq!(policy.wait(5, i64::MAX, T0, T0), Some(Duration::from_secs(300)));
        assert_eq!(policy.wait(20, 19, T0, T0), None);
        assert_eq!(policy.wait(20, 20, T0, T0), Some(S));
        // A last failure a server with a clock ahead wrote: never longer than the back-off.
        assert_eq!(policy.wait(5, 5, T0 + 10_000, T0), Some(S));
        // Forgotten 15 minutes after the last failure, even when its wait would be longer.
        let patient = Policy { max_wait: Duration::from_secs(3600), ..Policy::default() };
        assert_eq!(patient.wait(5, 99, T0, T0 + ms(15 * 60)), Some(Duration::from_secs(45 * 60)));
        assert_eq!(patient.wait(5, 99, T0, T0 + ms(15 * 60) + 1), None);
        assert_eq!(policy.forgotten_before(T0 + ms(15 * 60)), T0);
    }

    #[tokio::test]
    async fn five_free_failures_then_doubling_waits_capped() {
        let throttle = throttle().await;
        let user = [Key::user(" Alice ")];
        for i in 0..5 {
            assert_eq!(throttle.check(&user, T0 + ms(i)).await.unwrap(), None, "failure {i} is free");
            throttle.failed(&user, T0 + ms(i)).await.unwrap();
        }
        let last = T0 + ms(4);
        assert_eq!(throttle.check(&user, last).await.unwrap(), Some(S), "the 6th attempt waits 1 s");
        let half = Some(S / 2);
        assert_eq!(throttle.check(&[Key::user("alice")], last + 500).await.unwrap(), half, "same key, any spelling");
        assert_eq!(throttle.check(&user, last + ms(1)).await.unwrap(), None);
        throttle.failed(&user, last + ms(1)).await.unwrap();
        assert_eq!(throttle.check(&user, last + ms(1)).await.unwrap(), Some(2 * S));
        let mut now = last + ms(1);
        for _ in 0..20 {
            throttle.failed(&user, now).await.unwrap();
        }
        assert_eq!(throttle.check(&user, now).await.unwrap(), Some(Duration::from_secs(300)), "capped at 5 minutes");
        now += ms(300);
        assert_eq!(throttle.check(&user, now).await.unwrap(), None);
        // Forgotten 15 minutes after the last failure: counting starts again.
        now += ms(15 * 60 + 1);
        throttle.failed(&user, now).await.unwrap();
        assert_eq!(throttle.check(&user, now).await.unwrap(), None);
        // Success resets the user.
        for _ in 0..10 {
            throttle.failed(&user, now).await.unwrap();
        }
        assert!(throttle.check(&user, now).await.unwrap().is_some());
        throttle.succeeded(&user[0]).await.unwrap();
        assert_eq!(throttle.check(&user, now).await.unwrap(), None);
    }

    #[tokio::test]
    async fn addresses_get_twenty_and_ipv6_counts_by_64() {
        let throttle = throttle().await;
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Key::address(a), Key::address(b));
        assert_ne!(Key::address(a), Key::address(other));
        assert_eq!(Key::address("::ffff:10.1.2.3".parse().unwrap()), Key::address("10.1.2.3".parse().unwrap()));
        for i in 0..20 {
            let keys = [Key::user(&format!("guess{i}")), Key::address(a)];
            assert_eq!(throttle.check(&keys, T0).await.unwrap(), None, "attempt {i}");
            throttle.failed(&keys, T0).await.unwrap();
        }
        assert_eq!(throttle.check(&[Key::user("fresh"), Key::address(b)], T0).await.unwrap(), Some(S));
        assert_eq!(throttle.check(&[Key::user("fresh"), Key::address(other)], T0).await.unwrap(), None);
        // A success resets the name, not the address.
        throttle.succeeded(&Key::user("guess0")).await.unwrap();
        assert_eq!(throttle.check(&[Key::user("guess0"), Key::address(a)], T0).await.unwrap(), Some(S));
    }

    #[tokio::test]
    async fn the_sweep_deletes_only_forgotten_counts_and_names_are_not_stored() {
        let throttle = throttle().await;
        throttle.failed(&[Key::user("old")], T0).await.unwrap();
        throttle.failed(&[Key::user("Recent Name")], T0 + ms(60)).await.unwrap();
        assert_eq!(throttle.sweep(T0 + ms(15 * 60)).await.unwrap(), 0, "not forgotten yet");
        assert_eq!(throttle.sweep(T0 + ms(15 * 60) + 1).await.unwrap(), 1);
        let recent = throttle.subject(&Key::user("recent name"));
        let rows = throttle.store.login_failures(&[&recent, &throttle.subject(&Key::user("old"))]).await.unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!((rows[0].failures, rows[0].last_failed_at), (1, T0 + ms(60)));
        assert_eq!(rows[0].subject.len(), 64);
        assert!(!rows[0].subject.contains("recent"), "a keyed hash, not the name: {}", rows[0].subject);
        // Another secret key names the same key otherwise.
        let elsewhere = Throttle::new(throttle.store.clone(), b"another secret", Policy::default());
        assert_ne!(elsewhere.subject(&Key::user("recent name")), recent);
        assert_ne!(throttle.subject(&Key::user("10.0.0.1")), throttle.subject(&Key::address([10, 0, 0, 1].into())));
    }
}
