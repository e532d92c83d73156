//! What the command line records in the activity log, and as whom.

use super::secret_key;
use crate::{
    activity::{Activity, Actor, Change, Origin, ACTIVITY_KEY_PURPOSE},
    auth,
    config::Config,
    store::Store,
};

/// Who the command line says acted: `cli:USER`, the account that ran it.
pub(super) fn actor_name() -> String {
    format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()))
}

/// The activity log as the command line writes to it: what a command changed, by [`actor_name`], from `local`.
pub(super) struct Recorder {
    activity: Activity,
    actor: Actor,
}

impl Recorder {
    pub(super) fn open(config: &Config, store: &Store) -> anyhow::Result<Recorder> {
        let key = auth::derive_key(&secret_key(config)?, ACTIVITY_KEY_PURPOSE);
        Ok(Recorder::of(Activity::new(store.clone(), &key)))
    }

    pub(super) fn of(activity: Activity) -> Recorder {
        // The uid, not only $USER, which the caller sets: `sudo` keeps SUDO_USER, said beside it.
        // SAFETY: getuid cannot fail and touches no memory.
        let uid = unsafe { libc::getuid() };
        let credential = match std::env::var("SUDO_USER") {
            Ok(by) => format!("uid {uid}, sudo by {by}"),
            Err(_) => format!("uid {uid}"),
        };
        let origin = Origin { address: "local".into(), user_agent: format!("omserver {}", env!("CARGO_PKG_VERSION")) };
        Recorder { activity, actor: Actor { name: actor_name(), credential, origin } }
    }

    pub(super) async fn record(&self, change: Change) {
        self.activity.record(&self.actor, change).await;
    }
}
