//! Who may do what, where: a user's role limited to part of the inventory by grants.
//!
//! A user has, on each host, the highest role among its grants that cover the host, and no role on a host no
//! grant covers; never more than its account's role (`users.role`), and through a token never more than the
//! token's role. Every user is created with one grant on everything at its own role (and every user of an older
//! version was given one by the upgrade), so nothing changes until an admin narrows a user: add the grants it
//! should have, remove that one. A user whose last grant is removed reaches nothing. An admin is never limited:
//! an admin manages the grants, so limiting one would be theatre (its grants apply if it is made something else).
//!
//! A grant covers a host by the same selector as a saved job's targets: a host in any listed function category,
//! in any listed app category, or with any listed tag (a grant listing none covers every host). A grant that lists
//! modules or saved jobs lets its holder run only those modules, or jobs launched from those saved jobs; seeing
//! hosts, their jobs and their audit events is not limited by them.
//!
//! The principal carries its [`Scope`] (read with its credentials, at each request: a grant removed takes effect
//! at once); the jobs, the inventory listing, the audit queries and streams consult it. Grants are managed
//! here ([`Access`]) and stored in `user_grants`.

mod visible;

use std::{collections::HashSet, sync::Arc};

use serde::{Deserialize, Serialize};

use crate::{
    auth::Role,
    plugins::Registry,
    store::{GrantRow, HostRow, Store, StoreError, UserName},
};
use visible::VisibleHosts;

/// Most entries in one of a grant's lists.
const MAX_ITEMS: usize = 1_000;

/// Which part of the inventory a grant covers and what it may run there. Every list is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GrantSpec {
    /// Function categories (the inventory's first level), e.g. `Linux.DB`.
    #[serde(default)]
    pub functions: Vec<String>,
    /// App categories (the second level).
    #[serde(default)]
    pub apps: Vec<String>,
    /// Host tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Only these modules may be run (with `templates`: these modules, or runs of those saved jobs).
    #[serde(default)]
    pub modules: Vec<u32>,
    /// Only runs of these saved jobs (with `modules`: or those modules).
    #[serde(default)]
    pub templates: Vec<i64>,
}

/// A grant as a request writes it.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantForm {
    /// `viewer` or `operator`, at most the user's own role; absent or null: the user's own role, whatever it
    /// becomes.
    #[schema(pattern = r"^(viewer|operator)$")]
    pub role: Option<String>,
    /// Function categories some host is in.
    #[serde(default)]
    #[schema(max_items = 1000)]
    pub functions: Vec<String>,
    /// App categories some host is in.
    #[serde(default)]
    #[schema(max_items = 1000)]
    pub apps: Vec<String>,
    /// Tags some host has.
    #[serde(default)]
    #[schema(max_items = 1000)]
    pub tags: Vec<String>,
    /// Loaded modules' ids.
    #[serde(default)]
    #[schema(max_items = 1000)]
    pub modules: Vec<u32>,
    /// Saved jobs' ids.
    #[serde(default)]
    #[schema(max_items = 1000)]
    pub templates: Vec<i64>,
}

/// A grant as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GrantView {
    pub id: i64,
    /// `viewer` or `operator`; `null`: the user's own role.
    #[schema(value_type = Option<String>)]
    pub role: Option<Role>,
    #[serde(flatten)]
    pub spec: GrantSpec,
    pub created_by: String,
    pub created_at: i64,
}

/// One grant as the checks use it, its role resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub role: Role,
    pub spec: GrantSpec,
}

impl GrantSpec {
    /// Every host, every module.
    pub fn is_everything(&self) -> bool {
        [&self.functions, &self.apps, &self.tags].iter().all(|l| l.is_empty())
            && self.modules.is_empty()
            && self.templates.is_empty()
    }

    /// Whether the selector covers `host`: in a listed category or with a listed tag; any host when it lists none.
    pub fn covers(&self, host: &HostRow) -> bool {
        (self.functions.is_empty() && self.apps.is_empty() && self.tags.is_empty())
            || host.matches(&self.functions, &self.apps, &self.tags)
    }

    /// Whether it lists `module`, or saved job `template` when the job runs one; anything when it lists neither.
    pub fn lists(&self, module: u32, template: Option<i64>) -> bool {
        (self.modules.is_empty() && self.templates.is_empty())
            || self.modules.contains(&module)
            || template.is_some_and(|t| self.templates.contains(&t))
    }
}

impl Grant {
    fn covers(&self, host: &HostRow) -> bool {
        self.spec.covers(host)
    }

    fn lets_run(&self, module: u32, template: Option<i64>) -> bool {
        self.role >= Role::Operator && self.spec.lists(module, template)
    }
}

/// What a caller may reach: everything its role allows, or what its grants cover.
#[derive(Debug, Clone, Default)]
pub enum Scope {
    /// Unscoped: the role applies to every host.
    #[default]
    All,
    /// Only what these grants cover, each already capped by the caller's role.
    Granted(Arc<[Grant]>),
}

impl Scope {
    pub fn is_all(&self) -> bool {
        matches!(self, Scope::All)
    }

    /// Whether the caller may see `host`, its jobs and its audit events.
    pub fn sees(&self, host: &HostRow) -> bool {
        match self {
            Scope::All => true,
            Scope::Granted(grants) => grants.iter().any(|g| g.role >= Role::Viewer && g.covers(host)),
        }
    }

    /// Whether the caller may run `module` on `host` (in a run of saved job `template`, if any).
    pub fn may_run(&self, host: &HostRow, module: u32, template: Option<i64>) -> bool {
        match self {
            Scope::All => true,
            Scope::Granted(grants) => grants.iter().any(|g| g.lets_run(module, template) && g.covers(host)),
        }
    }

    /// The ids of the hosts of `inventory` the caller sees; `None` when it sees every host. What [`sees`] says
    /// of each host, asked once per host of the whole categories and tags of every grant (every audit query of a
    /// scoped caller asks this of the whole inventory: 20 grants over 1 000 hosts were 20 000 comparisons). In
    /// ascending order.
    ///
    /// [`sees`]: Scope::sees
    pub fn visible_ids(&self, inventory: &[HostRow]) -> Option<Vec<i64>> {
        let Scope::Granted(grants) = self else { return None };
        let viewing: Vec<&GrantSpec> = grants.iter().filter(|g| g.role >= Role::Viewer).map(|g| &g.spec).collect();
        let everything = |spec: &&GrantSpec| spec.functions.is_empty() && spec.apps.is_empty() && spec.tags.is_empty();
        if viewing.iter().any(everything) {
            return Some(sorted(inventory.iter().map(|h| h.id).collect()));
        }
        let functions: HashSet<&str> = viewing.iter().flat_map(|s| s.functions.iter().map(String::as_str)).collect();
        let apps: HashSet<&str> = viewing.iter().flat_map(|s| s.apps.iter().map(String::as_str)).collect();
        // As `HostRow::matches`: tags without regard to ASCII case, categories exactly.
        let tags: HashSet<String> =
            viewing.iter().flat_map(|s| s.tags.iter().map(|t| t.to_ascii_lowercase())).collect();
        let seen = |h: &&HostRow| {
            h.function.as_deref().is_some_and(|f| functions.contains(f))
                || h.app.as_deref().is_some_and(|a| apps.contains(a))
                || (!tags.is_empty() && h.tags.iter().any(|t| tags.contains(&t.to_ascii_lowercase())))
        };
        Some(sorted(inventory.iter().filter(seen).map(|h| h.id).collect()))
    }

    /// The names among `hosts` the caller may not run `module` on (a name not in `inventory` is among them).
    pub fn outside(&self, inventory: &[HostRow], hosts: &[String], module: u32, template: Option<i64>) -> Vec<String> {
        if self.is_all() {
            return Vec::new();
        }
        hosts
            .iter()
            .filter(|name| !inventory.iter().any(|h| &h.name == *name && self.may_run(h, module, template)))
            .cloned()
            .collect()
    }

    /// Whether the caller sees every one of `hosts` (names; one no longer in `inventory` is not seen).
    pub fn sees_all(&self, inventory: &[HostRow], hosts: &[String]) -> bool {
        self.is_all() || hosts.iter().all(|name| inventory.iter().any(|h| &h.name == name && self.sees(h)))
    }
}

fn sorted(mut ids: Vec<i64>) -> Vec<i64> {
    ids.sort_unstable();
    ids
}

/// The scope of user `user_id` acting with at most `ceiling` (the lower of the user's and the token's role).
/// One indexed read, skipped for an admin; a grant on everything at the ceiling is [`Scope::All`].
pub async fn scope_of(store: &Store, user_id: i64, ceiling: Role) -> Result<Scope, StoreError> {
    if ceiling >= Role::Admin {
        return Ok(Scope::All);
    }
    let mut grants = Vec::new();
    for row in store.grants_of(user_id).await?.iter() {
        match grant_of(row) {
            Ok((role, spec)) => {
                let role = role.map_or(ceiling, |r| r.min(ceiling));
                if role == ceiling && spec.is_everything() {
                    return Ok(Scope::All);
                }
                grants.push(Grant { role, spec });
            }
            // A row written behind the server's back: it grants nothing, and the holder keeps only the others.
            Err(why) => tracing::error!(grant_id = row.id, user_id, error = %why, "unreadable grant ignored"),
        }
    }
    Ok(Scope::Granted(grants.into()))
}

/// The scope a job started by `actor` runs under when no request carries it (a schedule's fire): a user's
/// scope if `actor` names a user, else unscoped (a token's or the command line's own name).
pub async fn scope_of_name(store: &Store, actor: &str) -> Result<Scope, StoreError> {
    let Ok(name) = UserName::parse(actor) else { return Ok(Scope::All) };
    match store.user_by_name(&name).await? {
        Some(user) => scope_of(store, user.id, user.role.parse().unwrap_or(Role::Viewer)).await,
        None => Ok(Scope::All),
    }
}

/// A stored grant's role (`None`: the user's) and selector.
fn grant_of(row: &GrantRow) -> Result<(Option<Role>, GrantSpec), String> {
    let role = row.role.as_deref().map(str::parse::<Role>).transpose()?;
    let spec: GrantSpec = serde_json::from_str(&row.spec).map_err(|e| e.to_string())?;
    Ok((role, spec))
}

/// Why a grant was not listed, added or removed.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// Not what the API document allows (a role other than viewer or operator, too many entries).
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// Well formed, but it names what does not exist (a category no host is in, a module not loaded, a saved job
    /// that is not there) or gives more than the user has.
    #[error("{field}: {reason}")]
    Unprocessable { field: &'static str, reason: String },
    #[error("user {0} not found")]
    UnknownUser(String),
    #[error("grant {0} not found")]
    NotFound(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn unprocessable(field: &'static str, reason: impl Into<String>) -> AccessError {
    AccessError::Unprocessable { field, reason: reason.into() }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> AccessError {
    AccessError::Invalid { field, reason: reason.into() }
}

/// Grants: listing, adding (checked against the inventory, the modules and the saved jobs), removing.
pub struct Access {
    store: Store,
    registry: Arc<Registry>,
    visible: VisibleHosts,
}

impl Access {
    pub fn new(store: Store, registry: Arc<Registry>) -> Access {
        Access { store, registry, visible: VisibleHosts::default() }
    }

    /// The ids of the hosts `scope` sees now, in ascending order; `None` when it sees every host.
    pub async fn visible_hosts(&self, scope: &Scope) -> Result<Option<Arc<[i64]>>, StoreError> {
        if scope.is_all() {
            return Ok(None);
        }
        Ok(self.visible.of(scope, &self.store.inventory_snapshot().await?))
    }

    pub async fn grants(&self, user: &str) -> Result<Vec<GrantView>, AccessError> {
        let user = self.user(user).await?;
        let rows = self.store.grants_of(user.id).await?;
        Ok(rows.iter().filter_map(|row| grant_of(row).ok().map(|(role, spec)| view_of(row, role, spec))).collect())
    }

    /// Checks `form` and gives it to `user`.
    pub async fn grant(&self, user: &str, form: GrantForm, by: &str) -> Result<GrantView, AccessError> {
        let user = self.user(user).await?;
        let role = match form.role.as_deref() {
            None => None,
            Some(text) => match text.parse::<Role>() {
                Ok(role @ (Role::Viewer | Role::Operator)) => Some(role),
                _ => return Err(invalid("role", "must be viewer or operator (absent: the user's own role)")),
            },
        };
        let user_role: Role = user.role.parse().unwrap_or(Role::Viewer);
        if let Some(role) = role.filter(|r| *r > user_role) {
            return Err(unprocessable("role", format!("{} is a {user_role}: a grant cannot give {role}", user.name)));
        }
        let spec = self.checked(form).await?;
        let json = serde_json::to_string(&spec).unwrap_or_else(|_| "{}".to_owned());
        let row = self.store.insert_grant(user.id, role.map(Role::as_str), &json, by).await?;
        tracing::info!(grant_id = row.id, user = %user.name, role = ?role, actor = by, "grant added");
        Ok(view_of(&row, role, spec))
    }

    /// Removes grant `id` of `user`; returns what it was.
    pub async fn revoke(&self, user: &str, id: i64, by: &str) -> Result<GrantView, AccessError> {
        let user = self.user(user).await?;
        let rows = self.store.grants_of(user.id).await?;
        let row = rows.iter().find(|r| r.id == id).ok_or(AccessError::NotFound(id))?;
        let removed = grant_of(row)
            .map_or_else(|_| view_of(row, None, GrantSpec::default()), |(role, spec)| view_of(row, role, spec));
        if !self.store.delete_grant(user.id, id).await? {
            return Err(AccessError::NotFound(id));
        }
        tracing::info!(grant_id = id, user = %user.name, actor = by, "grant removed");
        Ok(removed)
    }

    async fn user(&self, name: &str) -> Result<crate::store::UserRow, AccessError> {
        let parsed = UserName::parse(name).map_err(|_| AccessError::UnknownUser(name.to_owned()))?;
        self.store.user_by_name(&parsed).await?.ok_or_else(|| AccessError::UnknownUser(parsed.to_string()))
    }

    /// Every entry names something that exists: a category or tag some host has, a loaded module, a saved job.
    /// A typo would otherwise be a grant (or an approval policy) that silently covers nothing. The role is not
    /// looked at here.
    pub async fn checked(&self, form: GrantForm) -> Result<GrantSpec, AccessError> {
        let inventory = self.store.list_hosts().await?;
        let mut spec = GrantSpec { modules: form.modules, templates: form.templates, ..GrantSpec::default() };
        for (field, given, target) in [
            ("functions", form.functions, &mut spec.functions),
            ("apps", form.apps, &mut spec.apps),
            ("tags", form.tags, &mut spec.tags),
        ] {
            if given.len() > MAX_ITEMS {
                return Err(invalid(field, format!("at most {MAX_ITEMS} entries")));
            }
            let mut unknown = Vec::new();
            for entry in given {
                let entry = if field == "tags" { entry.trim().to_ascii_lowercase() } else { entry.trim().to_owned() };
                let known = inventory.iter().any(|h| match field {
                    "functions" => h.function.as_deref() == Some(entry.as_str()),
                    "apps" => h.app.as_deref() == Some(entry.as_str()),
                    _ => h.tags.iter().any(|t| t.eq_ignore_ascii_case(&entry)),
                });
                if !known {
                    unknown.push(entry);
                } else if !target.contains(&entry) {
                    target.push(entry);
                }
            }
            if !unknown.is_empty() {
                let what = match field {
                    "functions" => "no host is in function category",
                    "apps" => "no host is in app category",
                    _ => "no host has tag",
                };
                return Err(unprocessable(field, format!("{what} {}", unknown.join(", "))));
            }
        }
        spec.modules.sort_unstable();
        spec.modules.dedup();
        spec.templates.sort_unstable();
        spec.templates.dedup();
        if spec.modules.len() > MAX_ITEMS || spec.templates.len() > MAX_ITEMS {
            let field = if spec.modules.len() > MAX_ITEMS { "modules" } else { "templates" };
            return Err(invalid(field, format!("at most {MAX_ITEMS} entries")));
        }
        let unloaded: Vec<String> =
            spec.modules.iter().filter(|m| self.registry.get(**m).is_none()).map(|m| m.to_string()).collect();
        if !unloaded.is_empty() {
            return Err(unprocessable("modules", format!("no module is loaded with id {}", unloaded.join(", "))));
        }
        let mut missing = Vec::new();
        for id in &spec.templates {
            if self.store.template(*id).await?.is_none() {
                missing.push(id.to_string());
            }
        }
        if !missing.is_empty() {
            return Err(unprocessable("templates", format!("no saved job has id {}", missing.join(", "))));
        }
        Ok(spec)
    }
}

fn view_of(row: &GrantRow, role: Option<Role>, spec: GrantSpec) -> GrantView {
    GrantView { id: row.id, role, spec, created_by: row.created_by.clone(), created_at: row.created_at }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn host(id: i64, function: &str, app: &str, tags: &[&str]) -> HostRow {
        HostRow {
            id,
            name: format!("h{id}"),
            ip: format!("10.0.0.{id}"),
            wan_ip: None,
            op: None,
            function: Some(function.to_owned()),
            app: Some(app.to_owned()),
            port: None,
            user: None,
            created_at: 0,
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn grant(role: Role, spec: GrantSpec) -> Grant {
        Grant { role, spec }
    }

    #[test]
    fn a_grant_covers_any_listed_category_or_tag_and_runs_only_what_it_lists() {
        let db = host(1, "Linux.DB", "mysql", &["prod"]);
        let web = host(2, "Linux.Web", "nginx", &["prod"]);
        let staging_web = host(3, "Linux.Web", "nginx", &["staging"]);
        let scope = Scope::Granted(
            vec![
                grant(
                    Role::Operator,
                    GrantSpec { functions: vec!["Linux.DB".into()], modules: vec![1003], ..Default::default() },
                ),
                grant(Role::Viewer, GrantSpec { tags: vec!["PROD".into()], ..Default::default() }),
            ]
            .into(),
        );
        assert!(scope.sees(&db) && scope.sees(&web) && !scope.sees(&staging_web));
        assert!(scope.may_run(&db, 1003, None));
        assert!(!scope.may_run(&db, 1001, None), "the grant lists its modules");
        assert!(!scope.may_run(&web, 1003, None), "a viewer grant runs nothing");
        let inventory = vec![db, web, staging_web];
        assert_eq!(scope.visible_ids(&inventory), Some(vec![1, 2]));
        let names = vec!["h1".to_owned(), "h2".to_owned(), "gone".to_owned()];
        assert_eq!(scope.outside(&inventory, &names, 1003, None), vec!["h2".to_owned(), "gone".to_owned()]);
        assert!(!scope.sees_all(&inventory, &names));
        assert!(Scope::All.outside(&inventory, &names, 1, None).is_empty());
    }

    #[test]
    fn a_grant_on_saved_jobs_runs_them_whatever_their_module() {
        let db = host(1, "Linux.DB", "mysql", &[]);
        let scope =
            Scope::Granted(vec![grant(Role::Operator, GrantSpec { templates: vec![7], ..Default::default() })].into());
        assert!(scope.may_run(&db, 1001, Some(7)));
        assert!(!scope.may_run(&db, 1001, Some(8)));
        assert!(!scope.may_run(&db, 1001, None), "not outside a run of the saved job");
    }

    #[test]
    fn the_visible_ids_are_the_hosts_it_sees_one_by_one() {
        let names = ["Linux.DB", "Linux.Web", "Win.AD"];
        let apps = ["mysql", "nginx", "dc"];
        let tags = ["prod", "Staging", "eu", "ÉTÉ"];
        let inventory: Vec<HostRow> = (0..60)
            .map(|i| {
                let own: Vec<&str> = tags.iter().copied().filter(|_| i % 3 == 0).take(i as usize % 4).collect();
                host(i, names[i as usize % 3], apps[i as usize % 3 / 2 + i as usize % 2], &own)
            })
            .collect();
        let spec = |functions: &[&str], apps: &[&str], tags: &[&str]| GrantSpec {
            functions: functions.iter().map(|s| s.to_string()).collect(),
            apps: apps.iter().map(|s| s.to_string()).collect(),
            tags: tags.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let scopes = [
            vec![grant(Role::Viewer, spec(&["Linux.DB"], &[], &[]))],
            vec![
                grant(Role::Operator, spec(&[], &["nginx"], &["STAGING"])),
                grant(Role::Viewer, spec(&[], &[], &["été"])),
            ],
            vec![
                grant(Role::Viewer, spec(&["Win.AD"], &["mysql"], &["eu"])),
                grant(Role::Operator, spec(&[], &[], &[])),
            ],
            vec![grant(Role::Operator, GrantSpec { modules: vec![1003], ..spec(&["linux.db"], &[], &["Prod"]) })],
            vec![],
        ];
        for grants in scopes {
            let scope = Scope::Granted(grants.clone().into());
            let one_by_one: Vec<i64> = inventory.iter().filter(|h| scope.sees(h)).map(|h| h.id).collect();
            assert_eq!(scope.visible_ids(&inventory), Some(one_by_one), "{grants:?}");
        }
    }
}
