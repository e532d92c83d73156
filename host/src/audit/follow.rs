//! The live stream where several servers write the audit log (PostgreSQL): each writer signals its commits
//! (`NOTIFY omserver_audit` with the newest id, `store::audit`), and each server's follower reads the rows past
//! the last it published and publishes them in id order, its own rows and every other server's alike. Ids are
//! taken under the audit write lock and committed before it is let go, so the rows below a signalled id are all
//! there: following by id skips none. A lost signal (a dropped connection) is made good by reading again.

use std::{sync::Arc, time::Duration};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::store::{AuditQuery, AuditRow, Heard, Store, StoreError, AUDIT_CHANNEL};

/// Rows read at a time.
const PAGE: i64 = 1000;
/// How long to wait before listening again after the database went away.
const RETRY: Duration = Duration::from_secs(1);

/// Publishes every stored row to `live` until `stop`, from the newest row at start on.
pub(super) async fn follow(store: Store, live: broadcast::Sender<Arc<AuditRow>>, stop: CancellationToken) {
    let mut cursor = None;
    loop {
        // Listen first, then read: a row committed between the two is read, one committed after is signalled.
        match store.listen(AUDIT_CHANNEL).await {
            Ok(Some(mut listener)) => {
                let mut read = true;
                loop {
                    if read {
                        if let Err(err) = publish_past(&store, &live, &mut cursor).await {
                            tracing::warn!(error = %err, "audit live stream: cannot read the newest rows");
                        }
                    }
                    let heard = tokio::select! {
                        _ = stop.cancelled() => return,
                        heard = listener.next() => heard,
                    };
                    read = match heard {
                        // Only what this follower has not published yet needs a read, and only for a listener.
                        Ok(Heard::Signal(newest)) => match (newest.parse::<i64>(), cursor) {
                            (Ok(id), Some(c)) if live.receiver_count() == 0 => {
                                cursor = Some(c.max(id));
                                false
                            }
                            (Ok(id), Some(c)) => id > c,
                            _ => true,
                        },
                        Ok(Heard::Reconnected) => true,
                        Err(err) => {
                            tracing::warn!(error = %err, "audit live stream: lost the database; listening again");
                            break;
                        }
                    };
                }
            }
            Ok(None) => return,
            Err(err) => tracing::warn!(error = %err, "audit live stream: cannot listen for stored rows; trying again"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// Publishes the rows past `cursor` (all of them when somebody listens; only the cursor moves otherwise). The
/// first call only finds where the log ends.
async fn publish_past(
    store: &Store,
    live: &broadcast::Sender<Arc<AuditRow>>,
    cursor: &mut Option<i64>,
) -> Result<(), StoreError> {
    let Some(after) = *cursor else {
        *cursor = Some(store.newest_audit_id().await?);
        return Ok(());
    };
    if live.receiver_count() == 0 {
        *cursor = Some(store.newest_audit_id().await?.max(after));
        return Ok(());
    }
    let mut after = after;
    loop {
        let rows = store.query_audit(&AuditQuery { after: Some(after), limit: PAGE, ..AuditQuery::default() }).await?;
        let full = rows.len() as i64 == PAGE;
        for row in rows {
            after = after.max(row.id);
            let _ = live.send(Arc::new(row));
        }
        *cursor = Some(after);
        if !full {
            return Ok(());
        }
    }
}
