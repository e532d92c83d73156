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
    extract::{Path, Query, State},
    http::Method,
    response::{IntoResponse, Redirect, Response},
    Extension,
};

use crate::{
    auth::{Principal, Role},
    http::{
        routes::{Access, Routes},
        AppState, Authenticated, HttpError,
    },
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
        .plain(Method::GET, "/users", viewer, users_page)
        .plain(Method::GET, "/inventory", viewer, inventory_page)
        .plain(Method::GET, "/api-docs", viewer, api_docs_page)
        // The page's scripts and styles: the same for everyone, secrets in none.
        .plain(Method::GET, "/assets/{name}", Access::Public, assets::serve)
}

/// Who is looking at a page: what the layout needs to show and hide.
pub struct PageUser {
    pub name: String,
    pub role: &'static str,
    pub can_run: bool,
    pub is_admin: bool,
    /// The session's CSRF token, for the page's forms and scripts.
    pub csrf: String,
}

impl PageUser {
    fn of(principal: &Principal, csrf: String) -> PageUser {
        PageUser {
            name: principal.name.clone(),
            role: principal.role.as_str(),
            can_run: principal.role >= Role::Operator,
            is_admin: principal.role >= Role::Admin,
            csrf,
        }
    }
}

/// The caller of a page, from its session (pages are for browsers; a bearer token works too, without forms).
type Caller = (Result<Authenticated, HttpError>, Option<Extension<Session>>);

/// Why a page is not shown.
enum PageError {
    /// Nobody logged in: go to the login page rather than see a JSON 401.
    LogIn,
    Http(HttpError),
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::LogIn => Redirect::to("/login").into_response(),
            PageError::Http(err) => err.into_response(),
        }
    }
}

impl<E: Into<HttpError>> From<E> for PageError {
    fn from(err: E) -> PageError {
        PageError::Http(err.into())
    }
}

/// A page needs a logged-in viewer.
fn viewer((who, session): Caller) -> Result<PageUser, PageError> {
    let csrf = session.map(|Extension(s)| s.csrf_token).unwrap_or_default();
    match who {
        Ok(who) if who.0.role >= Role::Viewer => Ok(PageUser::of(&who.0, csrf)),
        Ok(_) => Err(HttpError::Forbidden(Role::Viewer.as_str()).into()),
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
    jobs: Vec<crate::jobs::JobView>,
}

async fn jobs_page(
    State(state): State<AppState>,
    who: Result<Authenticated, HttpError>,
    session: Option<Extension<Session>>,
) -> Result<JobsPage, PageError> {
    let user = viewer((who, session))?;
    let jobs = state.jobs.recent(100).await?;
    Ok(JobsPage { user: Some(user), jobs })
}

/// A page whose content its script fetches: only the layout is rendered here.
#[derive(Template, WebTemplate)]
#[template(path = "audit.html")]
struct AuditPage {
    user: Option<PageUser>,
}

#[derive(Template, WebTemplate)]
#[template(path = "modules.html")]
struct ModulesPage {
    user: Option<PageUser>,
}

async fn audit_page(
    who: Result<Authenticated, HttpError>,
    session: Option<Extension<Session>>,
) -> Result<AuditPage, PageError> {
    Ok(AuditPage { user: Some(viewer((who, session))?) })
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
        return Err(HttpError::Forbidden(Role::Operator.as_str()).into());
    }
    Ok(RunPage { user: Some(user) })
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

async fn home(who: Result<Authenticated, HttpError>, session: Option<Extension<Session>>) -> Response {
    match viewer((who, session)) {
        Ok(_) => Redirect::to("/jobs").into_response(),
        Err(err) => err.into_response(),
    }
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
    Path(id): Path<i64>,
) -> Result<JobPage, PageError> {
    let user = viewer((who, session))?;
    // A 404 page for a job that does not exist, rather than a page that fails in the browser.
    state.jobs.view(id).await?;
    Ok(JobPage { user: Some(user), id })
}
