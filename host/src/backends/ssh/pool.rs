//! Pooled connections: one per (address, port, user), shared by every job and call, many channels at once.
//!
//! A connection is closed after it has carried no channel for `idle` (a reaper task sweeps the pool), and russh's
//! keepalive notices a peer that stopped answering. A connection found closed is replaced on the spot; one that
//! looks open but cannot open a channel is replaced once by the caller (`SshBackend::exec_on`).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex, Weak,
    },
    time::{Duration, Instant},
};

use russh::client;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::connect::{ConnectError, Target, Verifier};

/// Commands at once on one connection: one less than OpenSSH's default `MaxSessions` (10, more channels are
/// refused by sshd), so that the channel that kills a cancelled command can always open.
const CHANNELS_PER_CONNECTION: usize = 9;

type Slot = Arc<tokio::sync::Mutex<Option<Arc<Connection>>>>;

pub struct Pool {
    inner: Arc<Inner>,
    reaper_started: AtomicBool,
}

struct Inner {
    slots: Mutex<HashMap<Target, Slot>>,
    idle: Duration,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let open = self.inner.slots.lock().map(|s| s.len()).unwrap_or(0);
        f.debug_struct("Pool").field("idle", &self.inner.idle).field("targets", &open).finish()
    }
}

/// One authenticated SSH connection.
pub struct Connection {
    handle: client::Handle<Verifier>,
    channels: Arc<Semaphore>,
    leases: AtomicUsize,
    last_used: Mutex<Instant>,
}

/// A right to use a connection for one channel; while any lease is out the connection is not idle.
pub struct Lease {
    connection: Arc<Connection>,
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    pub fn handle(&self) -> &client::Handle<Verifier> {
        &self.handle
    }

    fn is_open(&self) -> bool {
        !self.handle.is_closed()
    }

    /// How long it has carried no channel, or `None` while one is open.
    fn idle_for(&self) -> Option<Duration> {
        if self.leases.load(Ordering::SeqCst) > 0 {
            return None;
        }
        Some(self.last_used.lock().map(|t| t.elapsed()).unwrap_or_default())
    }

    fn touch(&self) {
        if let Ok(mut t) = self.last_used.lock() {
            *t = Instant::now();
        }
    }

    /// Waits for a free channel on this connection (sshd's `MaxSessions`).
    pub async fn lease(self: &Arc<Self>) -> Option<Lease> {
        let permit = self.channels.clone().acquire_owned().await.ok()?;
        self.leases.fetch_add(1, Ordering::SeqCst);
        self.touch();
        Some(Lease { connection: self.clone(), _permit: permit })
    }
}

impl Lease {
    pub fn connection(&self) -> &Arc<Connection> {
        &self.connection
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.connection.touch();
        self.connection.leases.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Pool {
    pub fn new(idle: Duration) -> Pool {
        Pool {
            inner: Arc::new(Inner { slots: Mutex::new(HashMap::new()), idle }),
            reaper_started: AtomicBool::new(false),
        }
    }

    /// The pooled connection for `target`, or a new one from `connect`. Callers for the same target wait for one
    /// connection attempt instead of racing their own (at most `wait` for another caller's attempt).
    /// The flag says whether the connection was reused.
    pub async fn get<F>(
        &self,
        target: &Target,
        wait: Duration,
        connect: F,
    ) -> Result<(Arc<Connection>, bool), ConnectError>
    where
        F: std::future::Future<Output = Result<client::Handle<Verifier>, ConnectError>>,
    {
        self.start_reaper();
        let slot = {
            let mut slots = self.inner.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.entry(target.clone()).or_default().clone()
        };
        let mut held = tokio::time::timeout(wait, slot.lock()).await.map_err(|_| {
            ConnectError::Unreachable(format!("another connection attempt to {target} did not finish within {wait:?}"))
        })?;
        if let Some(connection) = held.as_ref() {
            if connection.is_open() && connection.idle_for().is_none_or(|d| d < self.inner.idle) {
                connection.touch();
                return Ok((connection.clone(), true));
            }
            if let Some(stale) = held.take() {
                close(stale, "expired");
            }
        }
        let handle = connect.await?;
        let connection = Arc::new(Connection {
            handle,
            channels: Arc::new(Semaphore::new(CHANNELS_PER_CONNECTION)),
            leases: AtomicUsize::new(0),
            last_used: Mutex::new(Instant::now()),
        });
        *held = Some(connection.clone());
        tracing::debug!(%target, "ssh: new pooled connection");
        Ok((connection, false))
    }

    /// Drops `broken` from the pool (if it is still the pooled one), so the next `get` connects anew.
    pub async fn discard(&self, target: &Target, broken: &Arc<Connection>) {
        let slot = self.inner.slots.lock().unwrap_or_else(|p| p.into_inner()).get(target).cloned();
        if let Some(slot) = slot {
            let mut held = slot.lock().await;
            if held.as_ref().is_some_and(|c| Arc::ptr_eq(c, broken)) {
                if let Some(stale) = held.take() {
                    close(stale, "broken");
                }
            }
        }
    }

    /// The reaper runs while the pool exists (it holds only a weak reference) and needs a runtime, hence lazily.
    fn start_reaper(&self) {
        if self.reaper_started.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let every = (self.inner.idle / 4).max(Duration::from_millis(100));
        tokio::spawn(reap(weak, every));
    }
}

async fn reap(pool: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let Some(inner) = pool.upgrade() else { return };
        let mut slots = inner.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|target, slot| {
            // A slot someone holds is in use (connecting, or checking out its connection): leave it.
            let Ok(mut held) = slot.try_lock() else { return true };
            let expired = held.as_ref().is_some_and(|c| !c.is_open() || c.idle_for().is_some_and(|d| d >= inner.idle));
            if expired {
                if let Some(connection) = held.take() {
                    tracing::debug!(%target, "ssh: closing an idle pooled connection");
                    close(connection, "idle");
                }
            }
            // Keep the slot while anyone else holds a reference to it (a caller about to lock it).
            held.is_some() || Arc::strong_count(slot) > 1
        });
    }
}

/// Says goodbye politely in the background; dropping the handle would end the session anyway.
fn close(connection: Arc<Connection>, why: &'static str) {
    tokio::spawn(async move {
        let _ = connection.handle.disconnect(russh::Disconnect::ByApplication, why, "en").await;
    });
}
