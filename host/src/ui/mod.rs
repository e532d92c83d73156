//! The web console: pages rendered by askama (templates in `templates/`, checked at compile time and escaped
//! by default), small scripts in `assets/` embedded in the binary, and the JSON API underneath.
//!
//! **Invariant:** no untrusted string — a host name, command output, module text, an audited command — is ever
//! inserted into a page as HTML: templates escape, and the scripts write only through `textContent`. The
//! Content-Security-Policy allows no inline script, so even a missed escape could not run one.

mod assets;

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    extract::{
        rejection::{PathRejection, QueryRejection},
        Path, Query, State,
    },
    http::{Method, StatusCode},
    response::{IntoResponse, Redirect, Response},
    Extension,
};

use crate::{
    access::Scope,
    auth::{Principal, Role},
    calendar,
    http::{
        routes::{Access, Routes},
        AppState, Authenticated, HttpError,
    },
    jobs::{HistoryFilter, STATUSES},
    users::Session,
};

pub fn router() -> Routes {
    let viewer = Access::Page(Role::Viewer);
    Routes::new()
        .plain(Method::GET, "/", viewer, home)
        .plain(Method::GET, "/login", Access::Public, login_page)
        .plain(Method::GET, "/jobs", viewer, jobs_page)
        .plain(Method::GET, "/jobs/{id}", viewer, job_page)
        .plain(Method::GET, "/audit", viewer, audit_page)
        .plain(Method::GET, "/modules", viewer, modules_page)
        .plain(Method::GET, "/run", Access::Page(Role::Operator), run_page)
        .plain(Method::GET, "/templates", viewer, templates_page)
        .plain(Method::GET, "/notifications", Access::Page(Role::Admin), notifications_page)
        .plain(Method::GET, "/activity", Access::Page(Role::Admin), activity_page)
        .plain(Method::GET, "/users", viewer, users_page)
        .plain(Method::GET, "/inventory", viewer, inventory_page)
        .plain(Method::GET, "/cluster", viewer, cluster_page)
        .plain(Method::GET, "/api-docs", viewer, api_docs_page)
        // The page's scripts and styles: the same for everyone, secrets in none.
        .plain(Method::GET, "/assets/{name}", Access::Public, assets::serve)
        // Browsers ask for it without a session (and before any page says where the icon is).
        .plain(Method::GET, "/favicon.ico", Access::Public, assets::favicon)
}

/// Who is looking at a page: what the layout needs to show and hide.
#[derive(Clone)]
pub struct PageUser {
    pub name: String,
    pub role: &'static str,
    pub can_run: bool,
    pub is_admin: bool,
    /// The session's CSRF token, for the page's forms and scripts.
    pub csrf: String,
    /// What the user's grants let it see ([`crate::access`]).
    pub scope: Scope,
}

impl PageUser {
    fn of(principal: &Principal, csrf: String) -> PageUser {
        PageUser {
            name: principal.name.clone(),
            role: principal.role.as_str(),
            can_run: principal.role >= Role::Operator,
            is_admin: principal.role >= Role::Admin,
            csrf,
            scope: principal.scope.clone(),
        }
    }
}

/// The caller of a page, from its session (pages are for browsers; a bearer token works too, without forms).
type Caller = (Result<Authenticated, HttpError>, Option<Extension<Session>>);

/// Why a page is not shown.
enum PageError {
    /// Nobody logged in: go to the login page rather than see a JSON 401.
    LogIn,
    /// Anything else is a page in the console's layout with the status code, never a JSON body: the user (when
    /// known) keeps the menu.
    /// Boxed: a page error travels in a `Result` through every page handler.
    Shown { user: Option<PageUser>, err: Box<HttpError> },
}

impl PageError {
    fn shown(user: &PageUser, err: impl Into<HttpError>) -> PageError {
        PageError::Shown { user: Some(user.clone()), err: Box::new(err.into()) }
    }
}

/// An error as a console page.
#[derive(Template, WebTemplate)]
#[template(path = "error.html")]
struct ErrorPage {
    user: Option<PageUser>,
    title: &'static str,
    message: String,
    hint: Option<String>,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (user, err) = match self {
            PageError::LogIn => return Redirect::to("/login").into_response(),
            PageError::Shown { user, err } => (user, *err),
        };
        let status = err.status();
        let title = match status {
            StatusCode::BAD_REQUEST => "Bad request",
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::CONFLICT => "Conflict",
            StatusCode::SERVICE_UNAVAILABLE => "Unavailable",
            _ => "Something went wrong",
        };
        let hint = match (&err, &user) {
            (HttpError::Forbidden(needed), Some(user)) => {
                Some(format!("You are logged in as {} with the {} role.", user.name, user.role))
                    .filter(|_| *needed != user.role)
            }
            _ => None,
        };
        let message = match &err {
            HttpError::Forbidden(needed) => format!("This page needs the {needed} role."),
            HttpError::Internal(cause) => {
                // The cause is for the log, never for the page.
                tracing::error!(error = %cause, "console page failed");
                "The server could not show this page; the error is in its log.".to_owned()
            }
            other => other.to_string(),
        };
        (status, ErrorPage { user, title, message, hint }).into_response()
    }
}

/// Any path no route serves (axum's fallback): a console 404 page for people, the JSON error for the API.
pub async fn not_found(
    who: Result<Authenticated, HttpError>,
    session: Option<Extension<Session>>,
    uri: axum::http::Uri,
) -> Response {
    let path = uri.path();
    if path == "/api" || path.starts_with("/api/") {
        return HttpError::NotFound(format!("no such API path: {path}")).into_response();
    }
    // Without a session the page has no menu, and says nothing about what exists.
    let user = viewer((who, session)).ok();
    let err = HttpError::NotFound(format!("There is no page at {path}."));
    PageError::Shown { user, err: Box::new(err) }.into_response()
}

/// The router's answer to a known path asked with a method it does not take: the JSON error under `/api/`, a page
/// in the console's layout elsewhere (axum adds the `Allow` header).
pub async fn method_not_allowed(
    who: Result<Authenticated, HttpError>,
    session: Option<Extension<Session>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> Response {
    let path = uri.path();
    let err = HttpError::MethodNotAllowed(format!("{method} is not allowed on {path}"));
    if path == "/api" || path.starts_with("/api/") {
        return err.into_response();
    }
    let user = viewer((who, session)).ok();
    PageError::Shown { user, err: Box::new(err) }.into_response()
}

/// A page needs a logged-in viewer.
fn viewer((who, session): Caller) -> Result<PageUser, PageError> {
    let csrf = session.map(|Extension(s)| s.csrf_token).unwrap_or_default();
    match who {
        Ok(who) if who.0.role >= Role::Viewer => Ok(PageUser::of(&who.0, csrf)),
        Ok(_) => Err(PageError::Shown { user: None, err: Box::new(HttpError::Forbidden(Role::Viewer.as_str())) }),
        Err(_) => Err(PageError::LogIn),
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "login.html")]
struct LoginPage {
    user: Option<PageUser>,
    problem: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "job.html")]
struct JobPage {
    user: Option<PageUser>,
    id: i64,
}

#[derive(Template, WebTemplate)]
#[template(path = "jobs.html")]
struct JobsPage {
    user: Option<PageUser>,
    filter: HistoryFilter,
    /// Why the filter was refused, shown above an empty table.
    problem: Option<String>,
    jobs: Vec<HistoryLine>,
    /// Loaded modules (id, name): the module filter's choices and the names in the table.
    modules: Vec<(u32, String)>,
    /// The module filter's value when no loaded module has it (a module removed since), kept as a choice.
    module_not_loaded: Option<String>,
    statuses: [&'static str; 8],
    /// The query string of the next page, when there may be one.
    older: Option<String>,
}

/// One job of the history as the table shows it.
struct HistoryLine {
    job: crate::jobs::JobView,
    module_name: Option<String>,
    /// The status's icon: status is shown by word, icon and colour, never by colour alone.
    icon: &'static str,
    created: String,
    /// How long it ran, when it has finished.
    took: Option<String>,
    /// The first hosts, and how many more.
    hosts_shown: String,
    params: String,
}

impl HistoryLine {
    fn of(job: crate::jobs::JobView, modules: &[(u32, String)]) -> HistoryLine {
        const SHOWN: usize = 3;
        let mut hosts_shown = job.hosts.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
        if job.hosts.len() > SHOWN {
            hosts_shown.push_str(&format!(" and {} more", job.hosts.len() - SHOWN));
        }
        let took =
            job.started_at.zip(job.finished_at).map(|(start, end)| format!("{:.1} s", (end - start) as f64 / 1000.0));
        HistoryLine {
            module_name: modules.iter().find(|(id, _)| i64::from(*id) == job.module).map(|(_, name)| name.clone()),
            icon: status_icon(&job.status),
            created: calendar::utc_text(job.created_at),
            took,
            hosts_shown,
            params: job.params.to_string(),
            job,
        }
    }
}

/// The icon beside a job's or host's status word; `jobs.js` and `job.js` use the same ones (`console.js`).
fn status_icon(status: &str) -> &'static str {
    match status {
        "succeeded" | "ok" => "✓",
        "failed" => "✗",
        "running" => "⟳",
        "queued" => "◷",
        "cancelled" => "⊘",
        "unreachable" => "⚠",
        "lost" => "⊗",
        "skipped" => "↷",
        "pending_approval" => "‖",
        "rejected" => "✗",
        "expired" => "⊖",
        _ => "•",
    }
}

async fn jobs_page(
    State(state): State<AppState>,
    who: Result<Authenticated, HttpError>,
    session: Option<Extension<Session>>,
    filter: Result<Query<HistoryFilter>, QueryRejection>,
) -> Result<Response, PageError> {
    let user = viewer((who, session))?;
    let mut modules: Vec<(u32, String)> =
        state.registry.list().into_iter().filter_map(|m| Some((m.id?, m.name.unwrap_or_default()))).collect();
    modules.sort();
    let (filter, query) = match filter {
        Ok(Query(filter)) => {
            let query = filter.query().map_err(|e| e.to_string());
            (filter, query)
        }
        Err(rejection) => (HistoryFilter::default(), Err(rejection.body_text())),
    };
    let (jobs, problem, older) = match query {
        Ok(query) => {
            let jobs = state.jobs.history(&query, &user.scope).await.map_err(|e| PageError::shown(&user, e))?;
            let older = match jobs.last() {
                Some(last) if jobs.len() as i64 == query.limit => {
                    let next = HistoryFilter { before: Some(last.id), ..filter.clone() };
                    serde_urlencoded::to_string(&next).ok()
                }
                _ => None,
            };
            (jobs, None, older)
        }
        Err(problem) => (Vec::new(), Some(problem), None),
    };
    let status = if problem.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    let jobs = jobs.into_iter().map(|job| HistoryLine::of(job, &modules)).collect();
    let module_not_loaded = filter
        .module
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty() && !modules.iter().any(|(id, _)| id.to_string() == *m))
        .map(str::to_owned);
    let page =
        JobsPage { user: Some(user), filter, problem, jobs, modules, module_not_loaded, statuses: STATUSES, older };
    Ok((status, page).into_response())
}

/// A page whose content its script fetches: only the layout is rendered here.
#[derive(Template, WebTemplate)]
#[template(path = "audit.html")]
struct AuditPage {
    user: Option<PageUser>,
    /// App category names for the filter, sorted, each once (a name may repeat under two function categories).
    apps: Vec<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "modules.html")]
struct ModulesPage {
    user: Option<PageUser>,
}

async fn audit_page(
    State(state): State<AppState>,
    who: Result<Authenticated, HttpError>,
    session: Option<Extension<Session>>,
) -> Result<AuditPage, PageError> {
    let user = viewer((who, session))?;
    let apps: std::collections::BTreeSet<String> = state
        .store
        .list_hosts()
        .await
        .map_err(|e| PageError::shown(&user, e))?
        .into_iter()
        .filter(|host| user.scope.sees(host))
        .filter_map(|host| host.app)
        .collect();
    Ok(AuditPage { user: Some(user), apps: apps.into_iter().collect() })
}

async fn modules_page(
    who: Result<Authenticated, HttpError>,
    session: Option<Extension<Session>>,
) -> Result<ModulesPage, PageError> {
    Ok(ModulesPage { user: Some(viewer((who, session))?) })
}

#[derive(Template, WebTemplate)]
#[template(path = "run.html")]
struct RunPage {
    user: Option<PageUser>,
}

async fn run_page(
    who: Result<Authenticated, HttpError>,
    session: Option<Extension<Session>>,
) -> Result<RunPage, PageError> {
    let user = viewer((who, session))?;
    if !user.can_run {
        return Err(PageError::shown(&user, HttpError::Forbidden(Role::Operator.as_str())));
    }
    Ok(RunPage { user: Some(user) })
}

/// Saved jobs: everyone logged in reads them; operators also get the form and the run and delete buttons.
#[derive(Template, WebTemplate)]
#[template(path = "templates.html")]
struct TemplatesPage {
    user: Option<PageUser>,
}

async fn templates_page(
    who: Result<Authenticated, HttpError>,
    session: Option<Extension<Session>>,
) -> Result<TemplatesPage, PageError> {
    Ok(TemplatesPage { user: Some(viewer((who, session))?) })
}

/// Notification channels, subscriptions and the delivery log: admins only (channels hold secrets).
#[derive(Template, WebTemplate)]
#[template(path = "notifications.html")]
struct NotificationsPage {
    user: Option<PageUser>,
}

async fn notifications_page(
    who: Result<Authenticated, HttpError>,
    session: Option<Extension<Session>>,
) -> Result<NotificationsPage, PageError> {
    let user = viewer((who, session))?;
    if !user.is_admin {
        return Err(PageError::shown(&user, HttpError::Forbidden(Role::Admin.as_str())));
    }
    Ok(NotificationsPage { user: Some(user) })
}

/// The activity log: admins only, as its API.
#[derive(Template, WebTemplate)]
#[template(path = "activity.html")]
struct ActivityPage {
    user: Option<PageUser>,
}

async fn activity_page(
    who: Result<Authenticated, HttpError>,
    session: Option<Extension<Session>>,
) -> Result<ActivityPage, PageError> {
    let user = viewer((who, session))?;
    if !user.is_admin {
        return Err(PageError::shown(&user, HttpError::Forbidden(Role::Admin.as_str())));
    }
    Ok(ActivityPage { user: Some(user) })
}

/// The servers of this database.
#[derive(Template, WebTemplate)]
#[template(path = "cluster.html")]
struct ClusterPage {
    user: Option<PageUser>,
}

async fn cluster_page(
    who: Result<Authenticated, HttpError>,
    session: Option<Extension<Session>>,
) -> Result<ClusterPage, PageError> {
    Ok(ClusterPage { user: Some(viewer((who, session))?) })
}

/// Users (for admins) and the caller's API tokens.
#[derive(Template, WebTemplate)]
#[template(path = "users.html")]
struct UsersPage {
    user: Option<PageUser>,
}

#[derive(Template, WebTemplate)]
#[template(path = "api_docs.html")]
struct ApiDocsPage {
    user: Option<PageUser>,
}

async fn users_page(
    who: Result<Authenticated, HttpError>,
    session: Option<Extension<Session>>,
) -> Result<UsersPage, PageError> {
    Ok(UsersPage { user: Some(viewer((who, session))?) })
}

async fn api_docs_page(
    who: Result<Authenticated, HttpError>,
    session: Option<Extension<Session>>,
) -> Result<ApiDocsPage, PageError> {
    Ok(ApiDocsPage { user: Some(viewer((who, session))?) })
}

#[derive(Template, WebTemplate)]
#[template(path = "inventory.html")]
struct InventoryPage {
    user: Option<PageUser>,
}

async fn inventory_page(
    who: Result<Authenticated, HttpError>,
    session: Option<Extension<Session>>,
) -> Result<InventoryPage, PageError> {
    Ok(InventoryPage { user: Some(viewer((who, session))?) })
}

/// The home page: what needs attention now. Its script reads the lists and counts from the JSON API.
#[derive(Template, WebTemplate)]
#[template(path = "home.html")]
struct HomePage {
    user: Option<PageUser>,
}

async fn home(
    who: Result<Authenticated, HttpError>,
    session: Option<Extension<Session>>,
) -> Result<HomePage, PageError> {
    Ok(HomePage { user: Some(viewer((who, session))?) })
}

/// What `POST /login` sends a failed form login back with.
#[derive(Debug, serde::Deserialize)]
struct LoginQuery {
    error: Option<String>,
    retry_after: Option<u64>,
}

async fn login_page(Query(query): Query<LoginQuery>) -> LoginPage {
    let problem = match query.error.as_deref() {
        Some("throttled") => {
            Some(format!("Too many failed logins. Try again in {} s.", query.retry_after.unwrap_or(1)))
        }
        Some(_) => Some("Wrong user name or password.".to_owned()),
        None => None,
    };
    LoginPage { user: None, problem }
}

async fn job_page(
    State(state): State<AppState>,
    who: Result<Authenticated, HttpError>,
    session: Option<Extension<Session>>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<JobPage, PageError> {
    let user = viewer((who, session))?;
    let Path(id) =
        id.map_err(|_| PageError::shown(&user, HttpError::bad_request("A job id is a number, such as /jobs/7.")))?;
    // A 404 page for a job that does not exist, rather than a page that fails in the browser.
    state.jobs.view_in(id, &user.scope).await.map_err(|e| PageError::shown(&user, e))?;
    Ok(JobPage { user: Some(user), id })
}
