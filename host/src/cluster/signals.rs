//! Hearing other servers' signals (`LISTEN/NOTIFY`, `Store::listen`), for as long as a server runs: listening
//! again whenever the database went away, and saying so, since a signal sent meanwhile is lost and the one who
//! listens must read again what it follows.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::{Heard, Listener, Store};

/// How long to wait before listening again after the database went away.
const RETRY: Duration = Duration::from_secs(1);

/// What a [`Hearing`] hears.
#[derive(Debug)]
pub enum Signal {
    /// A signal on `channel` with its payload.
    On { channel: String, payload: String },
    /// Listening has (re)started: whatever was signalled before may have been missed. Also the first call.
    Missed,
}

/// The signals of some channels, heard until `stop` ([`Hearing::next`]).
pub struct Hearing {
    store: Store,
    channels: &'static [&'static str],
    /// Names the listener in the logs.
    what: &'static str,
    stop: CancellationToken,
    listener: Option<Listener>,
}

impl Hearing {
    pub fn new(
        store: Store,
        channels: &'static [&'static str],
        what: &'static str,
        stop: CancellationToken,
    ) -> Hearing {
        Hearing { store, channels, what, stop, listener: None }
    }

    /// The next signal: [`Signal::Missed`] first and after each new connection. `None` once `stop` is cancelled,
    /// or at once where no other server can signal (SQLite, MariaDB).
    pub async fn next(&mut self) -> Option<Signal> {
        loop {
            let Some(listener) = &mut self.listener else {
                match self.store.listen(self.channels).await {
                    Ok(Some(listener)) => {
                        self.listener = Some(listener);
                        return Some(Signal::Missed);
                    }
                    Ok(None) => return None,
                    Err(err) => {
                        tracing::warn!(error = %err, listener = self.what, "cannot listen for signals; trying again")
                    }
                }
                self.pause().await?;
                continue;
            };
            let heard = tokio::select! {
                _ = self.stop.cancelled() => return None,
                heard = listener.next() => heard,
            };
            match heard {
                Ok(Heard::Signal { channel, payload }) => return Some(Signal::On { channel, payload }),
                Ok(Heard::Reconnected) => return Some(Signal::Missed),
                Err(err) => {
                    tracing::warn!(error = %err, listener = self.what, "lost the database's signals; listening again");
                    self.listener = None;
                    self.pause().await?;
                }
            }
        }
    }

    /// Waits [`RETRY`]; `None` when stopped meanwhile.
    async fn pause(&self) -> Option<()> {
        tokio::select! {
            _ = self.stop.cancelled() => None,
            _ = tokio::time::sleep(RETRY) => Some(()),
        }
    }
}
