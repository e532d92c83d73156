//! The job history's filters as a person or a script gives them (`GET /api/jobs` and the `/jobs` page share
//! them): checked here, once, into the store's [`JobQuery`].

use serde::{Deserialize, Serialize};

use crate::{
    calendar::{self, End},
    store::JobQuery,
};

/// Every status a job can have, in the order it passes through them.
pub const STATUSES: [&str; 8] =
    ["pending_approval", "queued", "running", "succeeded", "failed", "cancelled", "rejected", "expired"];

/// Most jobs one listing returns.
pub const MAX_LIMIT: i64 = 1000;

/// Filters of the job history; empty fields mean "any". Times are UTC.
#[derive(Debug, Default, Clone, Deserialize, Serialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryFilter {
    /// Who submitted the job (a user or token name), exactly.
    pub user: Option<String>,
    /// A module id.
    pub module: Option<String>,
    /// One of pending_approval, queued, running, succeeded, failed, cancelled, rejected, expired (blank: any).
    #[param(pattern = r"^\s*(pending_approval|queued|running|succeeded|failed|cancelled|rejected|expired)?\s*$")]
    pub status: Option<String>,
    /// A host name among the job's targets, exactly.
    pub host: Option<String>,
    /// Created at or after: `YYYY-MM-DD`, `YYYY-MM-DD HH:MM` or `YYYY-MM-DD HH:MM:SS` (UTC).
    pub from: Option<String>,
    /// Created at or before, in the same forms; a day alone includes the whole day.
    pub to: Option<String>,
    /// Jobs with an id below this one (the next page).
    pub before: Option<i64>,
    /// At most this many jobs (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// A filter that is not valid: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FilterError {
    pub field: &'static str,
    pub reason: String,
}

impl HistoryFilter {
    pub fn query(&self) -> Result<JobQuery, FilterError> {
        let invalid = |field, reason: &str| FilterError { field, reason: reason.to_owned() };
        let module_id = match given(&self.module) {
            None => None,
            Some(text) => Some(
                text.parse::<u32>()
                    .map(i64::from)
                    .map_err(|_| invalid("module", "must be a module id, a number such as 1003"))?,
            ),
        };
        let status = match given(&self.status) {
            Some(status) if !STATUSES.contains(&status) => {
                return Err(invalid("status", &format!("must be one of {}", STATUSES.join(", "))))
            }
            status => status.map(str::to_owned),
        };
        let time = |field, text: &Option<String>, end| match given(text) {
            None => Ok(None),
            Some(text) => calendar::utc_ms(text, end)
                .map(Some)
                .ok_or_else(|| invalid(field, "must be a UTC time such as 2026-12-02 or 2026-12-02 10:30")),
        };
        let (from_ms, to_ms) = (time("from", &self.from, End::Start)?, time("to", &self.to, End::Finish)?);
        if let (Some(from), Some(to)) = (from_ms, to_ms) {
            if from > to {
                return Err(invalid("to", "is before from"));
            }
        }
        let limit = self.limit.unwrap_or(100);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(invalid("limit", &format!("must be between 1 and {MAX_LIMIT}")));
        }
        Ok(JobQuery {
            created_by: given(&self.user).map(str::to_owned),
            module_id,
            status,
            host: given(&self.host).map(str::to_owned),
            from_ms,
            to_ms,
            before: self.before,
            limit,
        })
    }

    /// Whether any field narrows the listing (paging aside).
    pub fn narrows(&self) -> bool {
        [&self.user, &self.module, &self.status, &self.host, &self.from, &self.to].iter().any(|f| given(f).is_some())
    }
}

/// A field's text, `None` when absent or blank (an empty form field means "any").
fn given(field: &Option<String>) -> Option<&str> {
    field.as_deref().map(str::trim).filter(|text| !text.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(f: impl FnOnce(&mut HistoryFilter)) -> Result<JobQuery, FilterError> {
        let mut filter = HistoryFilter::default();
        f(&mut filter);
        filter.query()
    }

    #[test]
    fn the_next_page_keeps_the_filters() {
        let filter = HistoryFilter { user: Some("a b&c".into()), before: Some(42), ..HistoryFilter::default() };
        assert_eq!(serde_urlencoded::to_string(&filter).unwrap(), "user=a+b%26c&before=42");
    }

    #[test]
    fn blank_fields_are_any_and_the_rest_are_checked() {
        let all = filter(|f| {
            f.user = Some("  ".into());
            f.status = Some(String::new());
        })
        .unwrap();
        assert_eq!((all.created_by, all.status, all.limit), (None, None, 100));
        let q = filter(|f| {
            f.user = Some(" alice ".into());
            f.module = Some("1003".into());
            f.status = Some("failed".into());
            f.from = Some("2026-12-02".into());
            f.to = Some("2026-12-02".into());
        })
        .unwrap();
        assert_eq!(
            (q.created_by.as_deref(), q.module_id, q.status.as_deref()),
            (Some("alice"), Some(1003), Some("failed"))
        );
        assert_eq!(q.to_ms.unwrap() - q.from_ms.unwrap(), 86_399_999);
        let field = |f: fn(&mut HistoryFilter)| filter(f).unwrap_err().field;
        assert_eq!(field(|f| f.module = Some("nginx".into())), "module");
        assert_eq!(field(|f| f.module = Some("-1".into())), "module");
        assert_eq!(field(|f| f.status = Some("ok".into())), "status");
        assert_eq!(field(|f| f.from = Some("yesterday".into())), "from");
        assert_eq!(field(|f| f.to = Some("2026-02-30".into())), "to");
        assert_eq!(
            field(|f| {
                f.from = Some("2026-12-03".into());
                f.to = Some("2026-12-02".into());
            }),
            "to"
        );
        assert_eq!(field(|f| f.limit = Some(0)), "limit");
        assert_eq!(field(|f| f.limit = Some(MAX_LIMIT + 1)), "limit");
    }
}
