//! Saved jobs (templates): a name, a module with its parameters, a target selector, a backend, a rollout and a
//! timeout, checked when saved and run as often as wanted, by hand or by a schedule.
//!
//! Targets are a selector resolved when each run starts: named hosts plus every host in the listed function
//! categories, app categories or tags (a host matches any of them). The resolved hosts are stored on the job,
//! and so is the template's definition as it ran: an edit never rewrites history.

use std::{sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    access::Scope,
    jobs::{JobError, JobOrigin, JobRequest, JobService, Rollout},
    store::{host_key, HostRow, NewTemplate, Store, StoreError, TemplateRow},
};

/// The longest timeout a saved job may set: a day.
pub const MAX_TIMEOUT_SECS: u64 = 86_400;
const MAX_NAME: usize = 128;
const MAX_DESCRIPTION: usize = 4_096;
const MAX_SELECTOR_ITEMS: usize = 1_000;

/// Which hosts a saved job runs on, resolved at each run. Every list is optional; a host matches any of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// Inventory hosts by name or internal IP.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Function categories (the inventory's first level), e.g. `Linux.DB`.
    #[serde(default)]
    pub functions: Vec<String>,
    /// App categories (the second level).
    #[serde(default)]
    pub apps: Vec<String>,
    /// Free tags.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A saved job as a request writes it (create and edit take the whole definition).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    /// 1 to 128 characters, no control characters, not only spaces (surrounding spaces are dropped).
    #[schema(max_length = 128, pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$")]
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub module: u32,
    /// Parameter name → value, checked against the module's schema when saved and at each run.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: serde_json::Map<String, serde_json::Value>,
    pub targets: Selector,
    /// An available backend by name; the server's `auto_platform` at run time when absent.
    #[serde(default)]
    pub backend: Option<String>,
    #[serde(default)]
    pub rollout: Option<Rollout>,
    /// Seconds before a run is stopped; the server's `job_timeout_secs` when absent.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// A saved job as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TemplateView {
    pub id: i64,
    #[serde(flatten)]
    pub spec: TemplateSpec,
    pub created_by: String,
    pub created_at: i64,
    pub updated_by: String,
    pub updated_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("saved job {0} not found")]
    NotFound(i64),
    #[error("no host matches the saved job's targets")]
    NoHostMatches,
    /// A stored row that no longer parses (written behind the server's back).
    #[error("{0}")]
    Damaged(String),
    #[error(transparent)]
    Job(#[from] JobError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &str, reason: impl Into<String>) -> TemplateError {
    TemplateError::Invalid { field: field.to_owned(), reason: reason.into() }
}

pub struct Templates {
    store: Store,
    jobs: Arc<JobService>,
}

impl Templates {
    pub fn new(store: Store, jobs: Arc<JobService>) -> Templates {
        Templates { store, jobs }
    }

    /// The saved jobs `scope` sees: those whose targets match only hosts it sees.
    pub async fn list(&self, scope: &Scope) -> Result<Vec<TemplateView>, TemplateError> {
        let all = self.store.list_templates().await?.into_iter().map(view_of).collect::<Result<Vec<_>, _>>()?;
        if scope.is_all() {
            return Ok(all);
        }
        let inventory = self.store.list_hosts().await?;
        Ok(all.into_iter().filter(|t| scope.sees_all(&inventory, &matched(&inventory, &t.spec.targets))).collect())
    }

    pub async fn get(&self, id: i64) -> Result<TemplateView, TemplateError> {
        view_of(self.store.template(id).await?.ok_or(TemplateError::NotFound(id))?)
    }

    /// Saved job `id` as `scope` sees it: one whose targets match a host it does not see is not found.
    pub async fn get_in(&self, id: i64, scope: &Scope) -> Result<TemplateView, TemplateError> {
        let template = self.get(id).await?;
        if !scope.is_all() {
            let inventory = self.store.list_hosts().await?;
            if !scope.sees_all(&inventory, &matched(&inventory, &template.spec.targets)) {
                return Err(TemplateError::NotFound(id));
            }
        }
        Ok(template)
    }

    /// Whether `scope` may run `spec` (saved as `id`, when it is) on every host its targets match now: what a
    /// scoped operator must have to save, change, delete or schedule it.
    pub async fn check_scope(&self, spec: &TemplateSpec, id: Option<i64>, scope: &Scope) -> Result<(), TemplateError> {
        if scope.is_all() {
            return Ok(());
        }
        let inventory = self.store.list_hosts().await?;
        let names = matched(&inventory, &spec.targets);
        let outside = scope.outside(&inventory, &names, spec.module, id);
        if outside.is_empty() {
            Ok(())
        } else {
            Err(TemplateError::Job(JobError::OutsideGrants(outside)))
        }
    }

    /// Checks and saves a new template; its id.
    pub async fn create(&self, spec: TemplateSpec, actor: &str, scope: &Scope) -> Result<i64, TemplateError> {
        let spec = self.checked(spec)?;
        self.check_scope(&spec, None, scope).await?;
        let stored = Stored::of(&spec);
        let id = self.store.add_template(&stored.row(&spec, actor)).await?;
        tracing::info!(template_id = id, name = %spec.name, module = spec.module, actor, "saved job created");
        Ok(id)
    }

    /// Checks and replaces a template's whole definition.
    pub async fn update(
        &self,
        id: i64,
        spec: TemplateSpec,
        actor: &str,
        scope: &Scope,
    ) -> Result<TemplateView, TemplateError> {
        let spec = self.checked(spec)?;
        // Both the definition it replaces and the new one must be the caller's to run.
        self.check_scope(&self.get_in(id, scope).await?.spec, Some(id), scope).await?;
        self.check_scope(&spec, Some(id), scope).await?;
        let stored = Stored::of(&spec);
        if !self.store.update_template(id, &stored.row(&spec, actor)).await? {
            return Err(TemplateError::NotFound(id));
        }
        tracing::info!(template_id = id, name = %spec.name, actor, "saved job edited");
        self.get(id).await
    }

    pub async fn delete(&self, id: i64, actor: &str, scope: &Scope) -> Result<(), TemplateError> {
        self.check_scope(&self.get_in(id, scope).await?.spec, Some(id), scope).await?;
        if !self.store.delete_template(id).await? {
            return Err(TemplateError::NotFound(id));
        }
        tracing::info!(template_id = id, actor, "saved job deleted");
        Ok(())
    }

    /// The hosts the template's selector matches now, in the order a run takes them: named hosts as listed, then
    /// the others by name.
    pub async fn resolve(&self, targets: &Selector) -> Result<Vec<String>, TemplateError> {
        let mut names: Vec<String> = targets.hosts.clone();
        let inventory = self.store.list_hosts().await?;
        let mut matched: Vec<&HostRow> =
            inventory.iter().filter(|h| h.matches(&targets.functions, &targets.apps, &targets.tags)).collect();
        matched.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        for host in matched {
            // A named entry may be the host's name (any case) or its address.
            let named =
                |n: &String| [n.as_str(), host_key(n).as_str()].iter().any(|k| *k == host.name || *k == host.ip);
            if !names.iter().any(named) {
                names.push(host.name.clone());
            }
        }
        Ok(names)
    }

    /// Starts a run: the selector resolved now, the parameters checked against the module loaded now. The job
    /// records the template and the definition it ran with. `actor` is who (or which schedule) runs it, within
    /// `scope`.
    pub async fn run(&self, id: i64, actor: &str, scope: &Scope) -> Result<i64, TemplateError> {
        self.run_as(id, actor, scope, false).await
    }

    /// Runs saved job `id` for a schedule (`actor`: `schedule:NAME`): an approval policy may exempt such runs.
    pub async fn run_scheduled(&self, id: i64, actor: &str, scope: &Scope) -> Result<i64, TemplateError> {
        self.run_as(id, actor, scope, true).await
    }

    async fn run_as(&self, id: i64, actor: &str, scope: &Scope, scheduled: bool) -> Result<i64, TemplateError> {
        let template = self.get(id).await?;
        let hosts = self.resolve(&template.spec.targets).await?;
        if hosts.is_empty() {
            return Err(TemplateError::NoHostMatches);
        }
        let definition = serde_json::to_string(&template.spec).unwrap_or_else(|_| "{}".to_owned());
        let spec = template.spec;
        let request = JobRequest {
            module: spec.module,
            hosts,
            params: spec.params,
            backend: spec.backend,
            rollout: spec.rollout,
        };
        let origin = JobOrigin {
            rerun_of: None,
            template: Some((id, definition)),
            timeout: spec.timeout_secs.map(Duration::from_secs),
            scheduled,
        };
        let job = self.jobs.submit_from(request, actor, scope, origin).await?;
        tracing::info!(template_id = id, job_id = job, actor, "saved job run");
        Ok(job)
    }

    /// Every part checked, names and selector entries trimmed, empty selector lists dropped.
    fn checked(&self, mut spec: TemplateSpec) -> Result<TemplateSpec, TemplateError> {
        spec.name = crate::labels::check(&spec.name, MAX_NAME)
            .ok_or_else(|| invalid("name", crate::labels::rule(MAX_NAME)))?
            .to_owned();
        if spec.description.chars().count() > MAX_DESCRIPTION {
            return Err(invalid("description", format!("must be at most {MAX_DESCRIPTION} characters")));
        }
        let selector = &mut spec.targets;
        for (field, list) in [
            ("targets.hosts", &mut selector.hosts),
            ("targets.functions", &mut selector.functions),
            ("targets.apps", &mut selector.apps),
            ("targets.tags", &mut selector.tags),
        ] {
            if list.len() > MAX_SELECTOR_ITEMS {
                return Err(invalid(field, format!("at most {MAX_SELECTOR_ITEMS} entries")));
            }
            for item in list.iter_mut() {
                *item = item.trim().to_owned();
                if item.is_empty() || item.len() > 255 || item.chars().any(char::is_control) {
                    return Err(invalid(field, "entries must be 1 to 255 characters, without control characters"));
                }
            }
        }
        if [&selector.hosts, &selector.functions, &selector.apps, &selector.tags].iter().all(|l| l.is_empty()) {
            return Err(invalid("targets", "name at least one host, function category, app category or tag"));
        }
        if let Some(secs) = spec.timeout_secs {
            if secs == 0 || secs > MAX_TIMEOUT_SECS {
                return Err(invalid("timeout_secs", format!("must be between 1 and {MAX_TIMEOUT_SECS} seconds")));
            }
        }
        if let Some(rollout) = &spec.rollout {
            rollout.check().map_err(|e| invalid(e.field, e.reason))?;
        }
        self.jobs.check(spec.module, &spec.params, spec.backend.as_deref())?;
        Ok(spec)
    }
}

/// The inventory names `targets` selects: named hosts (by name or address) and those in its categories or tags.
fn matched(inventory: &[HostRow], targets: &Selector) -> Vec<String> {
    inventory
        .iter()
        .filter(|h| {
            let named = targets
                .hosts
                .iter()
                .any(|n| [n.as_str(), host_key(n).as_str()].iter().any(|k| *k == h.name || *k == h.ip));
            named || h.matches(&targets.functions, &targets.apps, &targets.tags)
        })
        .map(|h| h.name.clone())
        .collect()
}

/// A spec's JSON columns.
struct Stored {
    params: String,
    targets: String,
    rollout: Option<String>,
}

impl Stored {
    fn of(spec: &TemplateSpec) -> Stored {
        Stored {
            params: serde_json::Value::Object(spec.params.clone()).to_string(),
            targets: serde_json::to_string(&spec.targets).unwrap_or_else(|_| "{}".to_owned()),
            rollout: spec.rollout.as_ref().and_then(|r| serde_json::to_string(r).ok()),
        }
    }

    fn row<'a>(&'a self, spec: &'a TemplateSpec, actor: &'a str) -> NewTemplate<'a> {
        NewTemplate {
            name: &spec.name,
            description: &spec.description,
            module_id: spec.module,
            params: &self.params,
            targets: &self.targets,
            backend: spec.backend.as_deref(),
            rollout: self.rollout.as_deref(),
            timeout_secs: spec.timeout_secs.and_then(|s| i64::try_from(s).ok()),
            actor,
        }
    }
}

fn view_of(row: TemplateRow) -> Result<TemplateView, TemplateError> {
    // The columns were written from a checked spec; one that no longer parses is a damaged row.
    let damaged = |what: &str, e: serde_json::Error| {
        TemplateError::Damaged(format!("saved job {} has unreadable {what}: {e}", row.id))
    };
    let params = match serde_json::from_str(&row.params).map_err(|e| damaged("parameters", e))? {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    let targets = serde_json::from_str(&row.targets).map_err(|e| damaged("targets", e))?;
    let rollout = row.rollout.as_deref().map(serde_json::from_str).transpose().map_err(|e| damaged("rollout", e))?;
    Ok(TemplateView {
        id: row.id,
        spec: TemplateSpec {
            name: row.name,
            description: row.description,
            module: u32::try_from(row.module_id).unwrap_or(u32::MAX),
            params,
            targets,
            backend: row.backend,
            rollout,
            timeout_secs: row.timeout_secs.and_then(|s| u64::try_from(s).ok()),
        },
        created_by: row.created_by,
        created_at: row.created_at,
        updated_by: row.updated_by,
        updated_at: row.updated_at,
    })
}
