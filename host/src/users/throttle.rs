//! Slowing down password guessing, per user name and per client address.
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
//! Memory is bounded: at most `max_keys` keys are tracked; when full, forgotten ones are dropped first, then the
//! one whose last failure is oldest.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

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
    pub max_keys: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            user_free: 5,
            address_free: 20,
            forget_after: Duration::from_secs(15 * 60),
            max_wait: Duration::from_secs(5 * 60),
            max_keys: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last: Instant,
}

/// Failed-login counts, in memory (a restart forgets them; the rule still holds from then on).
#[derive(Debug, Default)]
pub struct Throttle {
    policy: Policy,
    /// A plain mutex: every critical section is a few map operations, never held across an await.
    entries: Mutex<HashMap<Key, Entry>>,
}

impl Throttle {
    pub fn new(policy: Policy) -> Throttle {
        Throttle { policy, entries: Mutex::new(HashMap::new()) }
    }

    /// `Err(wait)` when any of `keys` must still wait that long before its next attempt.
    pub fn check(&self, keys: &[Key], now: Instant) -> Result<(), Duration> {
        let entries = self.lock();
        let wait = keys
            .iter()
            .filter_map(|key| {
                let entry = entries.get(key)?;
                let free = key.free(&self.policy);
                if self.forgotten(entry, now) || entry.failures < free {
                    return None;
                }
                let backoff = Duration::from_secs(1u64 << (entry.failures - free).min(16)).min(self.policy.max_wait);
                (entry.last + backoff).checked_duration_since(now).filter(|w| !w.is_zero())
            })
            .max();
        wait.map_or(Ok(()), Err)
    }

    /// Counts a failed attempt against each of `keys`.
    pub fn failed(&self, keys: &[Key], now: Instant) {
        let mut entries = self.lock();
        for key in keys {
            if !entries.contains_key(key) && entries.len() >= self.policy.max_keys {
                entries.retain(|_, e| !self.forgotten(e, now));
                if entries.len() >= self.policy.max_keys {
                    if let Some(oldest) = entries.iter().min_by_key(|(_, e)| e.last).map(|(k, _)| k.clone()) {
                        entries.remove(&oldest);
                    }
                }
            }
            let entry = entries.entry(key.clone()).or_insert(Entry { failures: 0, last: now });
            if self.forgotten(entry, now) {
                entry.failures = 0;
            }
            entry.failures = entry.failures.saturating_add(1);
            entry.last = now;
        }
    }

    /// A successful login: forgets `key`'s failures.
    pub fn succeeded(&self, key: &Key) {
        self.lock().remove(key);
    }

    /// Drops the counts nobody remembers any more (the periodic sweep).
    pub fn sweep(&self, now: Instant) {
        self.lock().retain(|_, e| !self.forgotten(e, now));
    }

    /// How many keys are tracked.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn forgotten(&self, entry: &Entry, now: Instant) -> bool {
        now.saturating_duration_since(entry.last) > self.policy.forget_after
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        // A panic while holding the lock leaves only counts behind, which stay consistent enough to use.
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn five_free_failures_then_doubling_waits_capped() {
        let throttle = Throttle::default();
        let user = [Key::user(" Alice ")];
        let t0 = Instant::now();
        for i in 0..5 {
            assert_eq!(throttle.check(&user, t0 + i * S), Ok(()), "failure {i} is free");
            throttle.failed(&user, t0 + i * S);
        }
        let last = t0 + 4 * S;
        assert_eq!(throttle.check(&user, last), Err(S), "the 6th attempt waits 1 s");
        assert_eq!(throttle.check(&[Key::user("alice")], last + S / 2), Err(S / 2), "same key, any spelling");
        assert_eq!(throttle.check(&user, last + S), Ok(()));
        throttle.failed(&user, last + S);
        assert_eq!(throttle.check(&user, last + S), Err(2 * S));
        let mut now = last + S;
        for _ in 0..20 {
            throttle.failed(&user, now);
        }
        assert_eq!(throttle.check(&user, now), Err(Duration::from_secs(300)), "capped at 5 minutes");
        now += Duration::from_secs(300);
        assert_eq!(throttle.check(&user, now), Ok(()));
        // Forgotten 15 minutes after the last failure: counting starts again.
        now += Duration::from_secs(15 * 60 + 1);
        throttle.failed(&user, now);
        assert_eq!(throttle.check(&user, now), Ok(()));
        // Success resets the user.
        for _ in 0..10 {
            throttle.failed(&user, now);
        }
        assert!(throttle.check(&user, now).is_err());
        throttle.succeeded(&user[0]);
        assert_eq!(throttle.check(&user, now), Ok(()));
    }

    #[test]
    fn addresses_get_twenty_and_ipv6_counts_by_64() {
        let throttle = Throttle::default();
        let t0 = Instant::now();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Key::address(a), Key::address(b));
        assert_ne!(Key::address(a), Key::address(other));
        assert_eq!(Key::address("::ffff:10.1.2.3".parse().unwrap()), Key::address("10.1.2.3".parse().unwrap()));
        for i in 0..20 {
            let keys = [Key::user(&format!("guess{i}")), Key::address(a)];
            assert_eq!(throttle.check(&keys, t0), Ok(()), "attempt {i}");
            throttle.failed(&keys, t0);
        }
        assert_eq!(throttle.check(&[Key::user("fresh"), Key::address(b)], t0), Err(S));
        assert_eq!(throttle.check(&[Key::user("fresh"), Key::address(other)], t0), Ok(()));
    }

    #[test]
    fn memory_is_bounded() {
        let throttle = Throttle::new(Policy { max_keys: 100, ..Policy::default() });
        let t0 = Instant::now();
        let first = Key::user("first");
        for _ in 0..6 {
            throttle.failed(std::slice::from_ref(&first), t0);
        }
        for i in 0..1000u32 {
            throttle.failed(&[Key::user(&format!("u{i}"))], t0 + Duration::from_millis(u64::from(i) + 1));
        }
        assert_eq!(throttle.len(), 100);
        assert_eq!(throttle.check(&[first], t0), Ok(()), "the oldest went first");
        throttle.sweep(t0 + Duration::from_secs(3600));
        assert!(throttle.is_empty());
    }
}
