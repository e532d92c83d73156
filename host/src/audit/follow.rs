//! The live stream where several servers write the audit log (PostgreSQL): each writer signals its commits
//! (`NOTIFY omserver_audit` with the newest id, `store::audit`), and each server's follower reads the rows past
//! the last it published and publishes them in id order, its own rows and every other server's alike. Ids are
//! taken under the audit write lock and committed before it is let go, so the rows below a signalled id are all
//! there: following by id skips none. A lost signal (a dropped connection) is made good by reading again.

use std::sync::Arc;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::{
    cluster::signals::{Hearing, Signal},
    store::{AuditQuery, AuditRow, Store, StoreError, AUDIT_CHANNEL},
};

/// Rows read at a time.
const PAGE: i64 = 1000;

/// Publishes every stored row to `live` until `stop`, from the newest row at start on.
pub(super) async fn follow(store: Store, live: broadcast::Sender<Arc<AuditRow>>, stop: CancellationToken) {
    let mut cursor: Option<i64> = None;
    let mut hearing = Hearing::new(store.clone(), &[AUDIT_CHANNEL], "audit live stream", stop);
    while let Some(signal) = hearing.next().await {
        let read = match (signal, cursor) {
            // Only what this follower has not published yet needs a read, and only for a listener.
            (Signal::On { payload, .. }, Some(c)) => match payload.parse::<i64>() {
                Ok(id) if live.receiver_count() == 0 => {
                    cursor = Some(c.max(id));
                    false
                }
                Ok(id) => id > c,
                Err(_) => true,
            },
            _ => true,
        };
        if read {
            if let Err(err) = publish_past(&store, &live, &mut cursor).await {
                tracing::warn!(error = %err, "audit live stream: cannot read the newest rows");
            }
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
