//! Rolling execution: how a job's hosts are split into batches, and when a failure threshold stops the rest.
//!
//! A rollout is `{"batch": 3 | "25%", "max_failed": 1 | "10%", "pause_secs": 0}`. The hosts are split in their
//! order; each batch is one `initialise` + `run` of the module, so no module changes and at most `batch` hosts
//! are ever running. A percentage is of the job's hosts, rounds up and is at least 1.

use serde::{Deserialize, Serialize};

/// The longest pause between two batches: a day. Anything longer is a schedule, not a rollout.
pub const MAX_PAUSE_SECS: u64 = 86_400;

/// A count of hosts or a share of the job's hosts (`"25%"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Amount {
    Count(i64),
    /// A percentage written as `"N%"`, 0 < N ≤ 100.
    Share(String),
}

/// A rollout as a request gives it and as jobs and templates store it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// Hosts per batch: a number ≥ 1 or a percentage of the job's hosts.
    pub batch: Amount,
    /// Once more hosts than this are not ok, no new batch starts. Absent: every batch runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failed: Option<Amount>,
    /// Seconds to wait between two batches.
    #[serde(default)]
    pub pause_secs: u64,
}

/// A rollout that is not valid: which part, and why, for a 400 answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct RolloutError {
    pub field: &'static str,
    pub reason: String,
}

/// A rollout applied to a number of hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub batch: usize,
    /// `None`: no threshold.
    pub max_failed: Option<usize>,
    pub pause: std::time::Duration,
}

impl Rollout {
    /// Checks every part without knowing the hosts (a template is saved before its targets resolve).
    pub fn check(&self) -> Result<(), RolloutError> {
        self.plan(1).map(|_| ())
    }

    /// The batch size and threshold for `hosts` hosts.
    pub fn plan(&self, hosts: usize) -> Result<Plan, RolloutError> {
        let batch = resolve(&self.batch, hosts, "rollout.batch", 1)?;
        let max_failed = self.max_failed.as_ref().map(|m| resolve(m, hosts, "rollout.max_failed", 0)).transpose()?;
        if self.pause_secs > MAX_PAUSE_SECS {
            return Err(RolloutError {
                field: "rollout.pause_secs",
                reason: format!("must be at most {MAX_PAUSE_SECS} seconds"),
            });
        }
        Ok(Plan { batch, max_failed, pause: std::time::Duration::from_secs(self.pause_secs) })
    }
}

impl Plan {
    /// Everything at once and no threshold: what a job without a rollout does.
    pub fn all_at_once(hosts: usize) -> Plan {
        Plan { batch: hosts.max(1), max_failed: None, pause: std::time::Duration::ZERO }
    }

    /// The batches' index ranges, in the hosts' order.
    pub fn batches(&self, hosts: usize) -> Vec<std::ops::Range<usize>> {
        (0..hosts).step_by(self.batch.max(1)).map(|start| start..(start + self.batch).min(hosts)).collect()
    }

    /// Why no further batch may start after `not_ok` of `hosts` hosts were not ok, if that is so.
    pub fn stop_reason(&self, not_ok: usize, hosts: usize) -> Option<String> {
        let allowed = self.max_failed?;
        (not_ok > allowed)
            .then(|| format!("failure threshold: {not_ok} of {hosts} hosts not ok, at most {allowed} allowed"))
    }
}

/// A count or percentage as a number of hosts. A count must be at least `min`; a percentage rounds up and is at
/// least 1.
fn resolve(amount: &Amount, hosts: usize, field: &'static str, min: i64) -> Result<usize, RolloutError> {
    let error = |reason: String| RolloutError { field, reason };
    match amount {
        Amount::Count(n) if *n < min => Err(error(format!("must be {min} or more, or a percentage such as \"25%\""))),
        Amount::Count(n) => Ok(usize::try_from(*n).unwrap_or(usize::MAX)),
        Amount::Share(text) => {
            let percent =
                text.trim().strip_suffix('%').and_then(|digits| digits.trim().parse::<u32>().ok()).ok_or_else(
                    || error(format!("{text:?} is neither a whole number nor a percentage such as \"25%\"")),
                )?;
            if percent == 0 || percent > 100 {
                return Err(error(format!("{text:?} must be a percentage between 1% and 100%")));
            }
            let share = (hosts * percent as usize).div_ceil(100);
            Ok(share.max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(batch: Amount, max_failed: Option<Amount>) -> Rollout {
        Rollout { batch, max_failed, pause_secs: 0 }
    }

    #[test]
    fn percentages_round_up_and_are_at_least_one() {
        let half = rollout(Amount::Share("50%".into()), None).plan(5).unwrap();
        assert_eq!(half.batches(5), vec![0..3, 3..5]);
        let tiny = rollout(Amount::Share("1%".into()), Some(Amount::Share("10%".into()))).plan(5).unwrap();
        assert_eq!((tiny.batch, tiny.max_failed), (1, Some(1)));
        let tenth = rollout(Amount::Count(3), Some(Amount::Share("10%".into()))).plan(31).unwrap();
        assert_eq!(tenth.max_failed, Some(4));
    }

    #[test]
    fn counts_split_in_order_and_the_last_batch_takes_the_rest() {
        let plan = rollout(Amount::Count(3), Some(Amount::Count(1))).plan(10).unwrap();
        assert_eq!(plan.batches(10), vec![0..3, 3..6, 6..9, 9..10]);
        assert_eq!(Plan::all_at_once(4).batches(4), vec![0..4]);
        assert_eq!(rollout(Amount::Count(50), None).plan(4).unwrap().batches(4), vec![0..4]);
    }

    #[test]
    fn the_threshold_stops_once_more_than_allowed_are_not_ok() {
        let plan = rollout(Amount::Count(3), Some(Amount::Count(1))).plan(10).unwrap();
        assert_eq!(plan.stop_reason(1, 10), None);
        assert_eq!(
            plan.stop_reason(2, 10).as_deref(),
            Some("failure threshold: 2 of 10 hosts not ok, at most 1 allowed")
        );
        assert_eq!(rollout(Amount::Count(3), None).plan(10).unwrap().stop_reason(10, 10), None);
    }

    #[test]
    fn bad_amounts_name_their_field() {
        let field = |r: Rollout| r.check().unwrap_err().field;
        assert_eq!(field(rollout(Amount::Count(0), None)), "rollout.batch");
        assert_eq!(field(rollout(Amount::Share("150%".into()), None)), "rollout.batch");
        assert_eq!(field(rollout(Amount::Share("0%".into()), None)), "rollout.batch");
        assert_eq!(field(rollout(Amount::Share("abc".into()), None)), "rollout.batch");
        assert_eq!(field(rollout(Amount::Count(1), Some(Amount::Count(-1)))), "rollout.max_failed");
        let long = Rollout { pause_secs: MAX_PAUSE_SECS + 1, ..rollout(Amount::Count(1), None) };
        assert_eq!(field(long), "rollout.pause_secs");
        assert!(rollout(Amount::Count(1), Some(Amount::Count(0))).check().is_ok(), "0: stop at the first failure");
    }
}
