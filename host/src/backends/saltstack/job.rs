//! One Salt job from publish to the last return: `local_async` to the target minions, then each minion's return
//! as it arrives on the event stream (tag `salt/job/<jid>/ret/<minion>`), until all have returned or the
//! timeout. A minion that has not returned by then gets `saltutil.kill_job`, and so does every minion still
//! running when the job is dropped (a cancelled Omserver job).

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use serde_json::{json, Value};

use super::api::{ApiError, EventStream, SaltApi};

/// One execution function call: `fun(*arg, **kwarg)` on each minion.
///
/// Pass values in `kwarg` rather than `arg` where possible: the minion reads a top-level string argument that
/// looks like `name=value` as a keyword and YAML-parses the others (`"0644"`, `"true"`, a long jid), while keyword
/// values and the items of a list argument arrive as they were sent.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    pub fun: &'a str,
    pub arg: Value,
    pub kwarg: Value,
}

/// What became of the job on one minion.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// The minion returned: the event's data (`{"id", "return", "retcode", "success", …}`).
    Returned(&'a Value),
    /// The master has no accepted key for this id; nothing was sent to it.
    NotKnown,
    /// No return within the timeout.
    NoReturn,
    /// The event stream broke before this minion returned.
    Lost(&'a ApiError),
}

/// Publishes `call` to `minions` (distinct ids) and hands each minion's outcome to `each` the moment it is known.
/// `events` must have been subscribed before this is called, so that no return can be missed. An error means the
/// job could not be published and `each` was not called.
pub async fn run(
    api: &Arc<SaltApi>,
    events: &mut EventStream,
    minions: &[String],
    call: Call<'_>,
    timeout: Duration,
    mut each: impl FnMut(&str, Outcome<'_>),
) -> Result<(), ApiError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let low = json!({
        "client": "local_async",
        "tgt": minions.join(","),
        "tgt_type": "list",
        "fun": call.fun,
        "arg": call.arg,
        "kwarg": call.kwarg,
    });
    let published = api.publish(low).await?;
    let mut guard = KillOnDrop { api: api.clone(), jid: published.jid.clone(), pending: BTreeSet::new() };
    for minion in minions {
        if published.minions.contains(minion) {
            guard.pending.insert(minion.clone());
        } else {
            each(minion, Outcome::NotKnown);
        }
    }
    tracing::debug!(jid = %published.jid, fun = call.fun, minions = guard.pending.len(), "salt job published");
    let prefix = format!("salt/job/{}/ret/", published.jid);
    while !guard.pending.is_empty() {
        let event = match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Ok(event)) => event,
            Ok(Err(lost)) => {
                guard.pending.iter().for_each(|m| each(m, Outcome::Lost(&lost)));
                guard.kill_pending();
                break;
            }
            Err(_) => {
                guard.pending.iter().for_each(|m| each(m, Outcome::NoReturn));
                guard.kill_pending();
                break;
            }
        };
        // Every event on the bus passes by; only this job's returns are parsed.
        let Some(minion) = event.tag.strip_prefix(&prefix) else { continue };
        if !guard.pending.remove(minion) {
            continue;
        }
        let data = match serde_json::from_str::<Value>(&event.data) {
            Ok(mut framed) => framed.get_mut("data").map(Value::take).unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        each(minion, Outcome::Returned(&data));
    }
    Ok(())
}

/// Kills the job on the minions that are still running it when the wait ends early: at the timeout, when the
/// event stream breaks, or when the future is dropped.
struct KillOnDrop {
    api: Arc<SaltApi>,
    jid: String,
    pending: BTreeSet<String>,
}

impl KillOnDrop {
    fn kill_pending(&mut self) {
        let minions = std::mem::take(&mut self.pending);
        if minions.is_empty() || self.jid.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(jid = %self.jid, "no runtime to send saltutil.kill_job on; the job may keep running");
            return;
        };
        let (api, jid) = (self.api.clone(), self.jid.clone());
        runtime.spawn(async move {
            let tgt = minions.iter().map(String::as_str).collect::<Vec<_>>().join(",");
            let low = json!({
                "client": "local_async",
                "tgt": tgt,
                "tgt_type": "list",
                "fun": "saltutil.kill_job",
                "kwarg": {"jid": jid},
            });
            match api.publish(low).await {
                Ok(kill) => tracing::info!(jid = %jid, kill_jid = %kill.jid, minions = %tgt, "sent saltutil.kill_job"),
                Err(err) => tracing::warn!(jid = %jid, error = %err, "could not send saltutil.kill_job"),
            }
        });
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill_pending();
    }
}
