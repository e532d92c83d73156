//! A job's event stream: each host result as it arrives, then the job's final view.

use std::{collections::VecDeque, sync::Arc};

use tokio::sync::{broadcast, watch};

use super::{result_row, JobService, JobView};
use crate::{backends::Progress, store::ResultRow};

/// What `/api/jobs/{id}/events` sends: each host result as it arrives, then the job's final view.
#[derive(Debug)]
pub enum JobEvent {
    Host(ResultRow),
    End(Box<JobView>),
}

/// Reads one job's events in order, waiting for new ones while the job runs. Nothing is skipped: it reads the
/// job's progress by index rather than from a channel that could lag.
pub struct EventCursor {
    pub(super) id: i64,
    pub(super) service: Arc<JobService>,
    pub(super) queue: VecDeque<JobEvent>,
    pub(super) live: Option<(watch::Receiver<usize>, Arc<Progress>, usize)>,
    /// A job another server runs: its signals, and how many entries of its copied progress were read.
    pub(super) remote: Option<(broadcast::Receiver<Option<i64>>, i64)>,
    pub(super) ended: bool,
}

impl EventCursor {
    /// The next event; `None` after `End`.
    pub async fn next(&mut self) -> Option<JobEvent> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            if self.ended {
                return None;
            }
            match &mut self.live {
                Some((changes, progress, seen)) => {
                    // Closed is read before the results, so a result pushed just before closing is still read.
                    let closed = progress.is_closed();
                    let fresh = progress.since(*seen);
                    *seen += fresh.len();
                    self.queue.extend(fresh.into_iter().map(|e| JobEvent::Host(result_row(e))));
                    // A closed channel cannot happen while we hold the progress; treat it as the end anyway.
                    let ended = closed || (self.queue.is_empty() && changes.changed().await.is_err());
                    if ended {
                        self.live = None;
                    }
                }
                None if self.remote.is_some() => self.next_remote().await,
                None => {
                    self.ended = true;
                    match self.service.view(self.id).await {
                        Ok(view) => self.queue.push_back(JobEvent::End(Box::new(view))),
                        Err(err) => tracing::warn!(job_id = self.id, error = %err, "job events: no final view"),
                    }
                }
            }
        }
    }

    /// Reads what another server's job reported since the last read; once nothing is new, whether it ended, and
    /// if not, waits for its next signal (or [`REREAD`](super::remote::REREAD)). Leaves `remote` once it ended.
    async fn next_remote(&mut self) {
        let Some((signals, seen)) = &mut self.remote else { return };
        let store = &self.service.store;
        match store.job_progress(self.id, *seen).await {
            Ok(fresh) if !fresh.is_empty() => {
                *seen += fresh.len() as i64;
                self.queue.extend(fresh.into_iter().map(JobEvent::Host));
                return;
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(job_id = self.id, error = %err, "job events: cannot read another server's job"),
        }
        match store.job(self.id).await {
            Ok(Some(job)) if !matches!(job.status.as_str(), "queued" | "running") => {
                self.remote = None;
                return;
            }
            Ok(None) => {
                self.remote = None;
                return;
            }
            _ => {}
        }
        let deadline = tokio::time::sleep(super::remote::REREAD);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                signal = signals.recv() => match signal {
                    Ok(Some(id)) if id != self.id => {}
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => {
                        self.remote = None;
                        return;
                    }
                },
            }
        }
    }
}
