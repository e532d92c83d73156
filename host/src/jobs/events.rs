//! A job's event stream: each host result as it arrives, then the job's final view.

use std::{collections::VecDeque, sync::Arc};

use tokio::sync::watch;

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
}
