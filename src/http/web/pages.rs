//! The pages: one handler and one typed view per page.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    ClientAddr, PAGE_CSP, PRE_COOKIE, SESSION_COOKIE, WebError, WebForm, WebUser, cookie, csrf_for,
    enc, html_headers,
};
use crate::domain::{
    Channel, Millis, PolicyOutcome, Request, Requirement, State as ReqState, Verdict,
    format_duration, parse_duration,
};
use crate::http::AppState;
use crate::secret::{random_b64, same};
use crate::service::{CreateInput, ListQuery, ListScope, now_ms, token_hash};
use crate::store::{AuditFilter, TokenScope, WriteCtx};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/static/{file}", get(static_file))
        .route("/signin", get(signin_page))
        .route("/signin/dev", post(signin_dev))
        .route("/signin/oidc", get(signin_oidc))
        .route("/auth/callback", get(oidc_callback))
        .route("/signout", post(signout))
        .route("/", get(home))
        .route("/requests/new", get(new_request))
        .route("/requests/preview", post(preview))
        .route("/requests", post(create))
        .route("/requests/{id}", get(request_page))
        .route("/requests/{id}/review", post(review))
        .route("/requests/{id}/end", post(end))
        .route("/requests/{id}/cancel", post(cancel))
        .route("/requests/{id}/revoke", post(revoke))
        .route("/approvals", get(approvals))
        .route("/entitlements", get(catalog))
        .route("/audit", get(audit))
        .route("/audit/export.jsonl", get(audit_export))
        .route("/tokens", get(tokens))
        .route("/tokens/{id}/revoke", post(revoke_token))
        .route("/cli/login", get(cli_login_page).post(cli_login))
}

// ---------------------------------------------------------------------------------------------
// Shared view parts.

/// The header of every page.
#[derive(Debug, Serialize)]
pub struct Nav {
    user: Option<NavUser>,
    admin: bool,
    auditor: bool,
    csrf: String,
    approvals: usize,
    dev: bool,
}

#[derive(Debug, Serialize)]
struct NavUser {
    id: String,
    name: String,
}

impl Nav {
    /// The header for someone not signed in.
    pub fn anonymous(dev: bool) -> Nav {
        Nav {
            user: None,
            admin: false,
            auditor: false,
            csrf: String::new(),
            approvals: 0,
            dev,
        }
    }

    pub(super) async fn of(st: &AppState, u: &WebUser) -> Result<Nav, WebError> {
        let waiting = st
            .service
            .list(
                &u.caller,
                &ListQuery {
                    scope: ListScope::Review,
                    states: vec![ReqState::Pending],
                    limit: 100,
                    ..ListQuery::default()
                },
            )
            .await?;
        let p = &u.caller.principal;
        Ok(Nav {
            user: Some(NavUser {
                id: p.id.clone(),
                name: p.name.clone().unwrap_or_else(|| p.id.clone()),
            }),
            admin: u.caller.roles.admin,
            auditor: u.caller.roles.auditor,
            csrf: u.csrf.clone(),
            approvals: waiting.len(),
            dev: st.dev,
        })
    }
}

/// A whole page: the header, an optional notice, and the page's own view.
#[derive(Debug, Serialize)]
struct Page<T: Serialize> {
    title: String,
    nav: Nav,
    flash: Option<String>,
    #[serde(flatten)]
    view: T,
}

pub(super) fn render<T: Serialize>(
    st: &AppState,
    template: &str,
    title: &str,
    nav: Nav,
    flash: Option<String>,
    view: T,
) -> Response {
    render_csp(st, template, title, nav, flash, view, PAGE_CSP)
}

fn render_csp<T: Serialize>(
    st: &AppState,
    template: &str,
    title: &str,
    nav: Nav,
    flash: Option<String>,
    view: T,
    csp: &str,
) -> Response {
    let page = Page {
        title: title.to_owned(),
        nav,
        flash,
        view,
    };
    match st.web.templates.render(template, &page) {
        Ok(body) => (StatusCode::OK, html_headers(csp), body).into_response(),
        Err(e) => WebError::internal(&e).into_response(),
    }
}

pub(super) use crate::domain::format_utc as when;

fn iso(ms: Millis) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// `1 h 5 min left`.
pub fn time_left(ms: Millis) -> String {
    if ms <= 0 {
        return "ended".into();
    }
    let mins = (ms + 59_999) / 60_000;
    if mins >= 60 {
        format!("{} h {} min left", mins / 60, mins % 60)
    } else {
        format!("{mins} min left")
    }
}

fn who(r: &Requirement) -> String {
    let mut parts: Vec<String> = r.users.clone();
    parts.extend(r.groups.iter().map(|g| format!("group {g}")));
    if parts.is_empty() {
        "nobody named".into()
    } else {
        parts.join(", ")
    }
}

pub(super) fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// Only a path on this server: no scheme, no `//host`, no backslashes, no control characters.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && n.len() <= 2000
                && !n.chars().any(char::is_control) =>
        {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

#[derive(Debug, Serialize)]
struct Row {
    id: String,
    entitlement: String,
    requester: String,
    state: String,
    duration: String,
    created_at: String,
}

fn row(r: &Request) -> Row {
    Row {
        id: r.id.clone(),
        entitlement: r.entitlement.clone(),
        requester: r
            .requester
            .name
            .clone()
            .unwrap_or_else(|| r.requester.id.clone()),
        state: r.state.as_str().to_owned(),
        duration: format_duration(r.duration_secs),
        created_at: when(r.created_at),
    }
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

// ---------------------------------------------------------------------------------------------
// Static files.

async fn static_file(Path(file): Path<String>) -> Response {
    match super::templates::STATIC.iter().find(|(n, _, _)| *n == file) {
        Some((_, ctype, body)) => (
            [
                (header::CONTENT_TYPE, *ctype),
                (header::CACHE_CONTROL, "public, max-age=300"),
            ],
            *body,
        )
            .into_response(),
        None => WebError::not_found("no such file").into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// Sign-in and sign-out.

#[derive(Debug, Deserialize)]
struct NextQuery {
    next: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct SigninView {
    error: Option<String>,
    oidc: Option<String>,
    dev_users: Vec<DevUser>,
    pre_csrf: String,
    next: String,
    next_enc: String,
}

#[derive(Debug, Serialize)]
struct DevUser {
    id: String,
    label: String,
}

async fn signin_page(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Response {
    let policy = st.service.policy();
    let next = safe_next(q.next.as_deref());
    let (pre, set) = match cookie(&headers, PRE_COOKIE) {
        Some(p) => (p, false),
        None => (random_b64(), true),
    };
    let dev_users = if st.dev {
        policy
            .config
            .users
            .iter()
            .map(|u| DevUser {
                id: u.id.clone(),
                label: format!(
                    "{}{}",
                    u.name.clone().unwrap_or_else(|| u.id.clone()),
                    if u.groups.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", u.groups.join(", "))
                    }
                ),
            })
            .collect()
    } else {
        Vec::new()
    };
    let view = SigninView {
        error: q.error.map(|e| match e.as_str() {
            "signed_out" => "You are signed out.".to_owned(),
            _ => "Sign-in did not complete. Try again.".to_owned(),
        }),
        oidc: policy.config.oidc.as_ref().map(|o| o.display_name.clone()),
        dev_users,
        pre_csrf: csrf_for(&pre),
        next_enc: enc(&next),
        next,
    };
    let mut res = render(&st, "signin", "Sign in", Nav::anonymous(st.dev), None, view);
    if set {
        res.headers_mut()
            .append(header::SET_COOKIE, st.web.cookie(PRE_COOKIE, &pre, 3600));
    }
    res
}

pub(super) fn limited(wait: u64) -> Response {
    let mut res = WebError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "Slow down",
        format!("Too many attempts from here. Try again in {wait} s."),
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
        res.headers_mut().insert(header::RETRY_AFTER, v);
    }
    res
}

pub(super) fn pre_ok(headers: &HeaderMap, sent: &str) -> bool {
    cookie(headers, PRE_COOKIE).is_some_and(|pre| same(sent, &csrf_for(&pre)))
}

pub(super) async fn start_session(
    st: &AppState,
    principal: &crate::domain::Principal,
    ctx: &WriteCtx,
    next: &str,
) -> Result<Response, WebError> {
    let ttl = st.service.policy().config.auth.session_ttl_secs;
    // Remembered (with today's groups) so reviewer groups can be mailed.
    if let Err(e) = st
        .service
        .store()
        .remember_person(principal, crate::service::now_ms())
        .await
    {
        tracing::warn!(error = %e, "could not remember who signed in");
    }
    let (token, _) = st
        .service
        .issue_scoped_token(
            principal,
            "browser session",
            ttl,
            TokenScope::Web,
            Channel::Web,
            ctx,
        )
        .await?;
    let mut res = see_other(next);
    let h = res.headers_mut();
    h.append(
        header::SET_COOKIE,
        st.web.cookie(SESSION_COOKIE, &token, ttl),
    );
    h.append(header::SET_COOKIE, st.web.clear_cookie(PRE_COOKIE));
    Ok(res)
}

#[derive(Debug, Deserialize)]
struct DevSignin {
    #[serde(default)]
    csrf: String,
    user: String,
    next: Option<String>,
}

async fn signin_dev(
    State(st): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    ctx: WriteCtx,
    WebForm(f): WebForm<DevSignin>,
) -> Result<Response, WebError> {
    if !st.dev {
        return Err(WebError::not_found(
            "the dev sign-in exists only in dev mode",
        ));
    }
    if let Err(wait) = st.web.limits.signin.check(&addr) {
        return Ok(limited(wait));
    }
    if !pre_ok(&headers, &f.csrf) {
        return Err(WebError::new(
            StatusCode::FORBIDDEN,
            "This form cannot be accepted",
            "The sign-in form did not carry a valid security token (CSRF). Reload the sign-in page and try again.",
        ));
    }
    let policy = st.service.policy();
    let principal = policy
        .directory_principal(&f.user)
        .ok_or_else(|| WebError::not_found(format!("no dev user `{}`", f.user)))?;
    start_session(&st, &principal, &ctx, &safe_next(f.next.as_deref())).await
}

async fn signin_oidc(
    State(st): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Result<Response, WebError> {
    if let Err(wait) = st.web.limits.signin.check(&addr) {
        return Ok(limited(wait));
    }
    let policy = st.service.policy();
    let cfg = policy.config.oidc.as_ref().ok_or_else(|| {
        WebError::not_found("single sign-on is not configured on this server ([oidc])")
    })?;
    let next = safe_next(q.next.as_deref());
    let started = st
        .web
        .oidc
        .start(cfg, &policy.config.secrets, &redirect_uri(&st), &next)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "OIDC sign-in could not start");
            WebError::new(StatusCode::BAD_GATEWAY, "Sign-in is unavailable", e)
        })?;
    // Bind the flow to this browser: the callback must come with the same pre-sign-in cookie.
    let pre = cookie(&headers, PRE_COOKIE).unwrap_or_else(random_b64);
    let mut data = started.data;
    data["pre"] = Value::String(token_hash(&pre));
    st.service
        .store()
        .put_one_time(
            &token_hash(&started.state),
            "oidc",
            &data,
            now_ms() + super::oidc::FLOW_TTL_MS,
        )
        .await?;
    let mut res = see_other(started.url.as_str());
    res.headers_mut()
        .append(header::SET_COOKIE, st.web.cookie(PRE_COOKIE, &pre, 3600));
    Ok(res)
}

fn redirect_uri(st: &AppState) -> String {
    st.web
        .public_url
        .join("auth/callback")
        .map_or_else(|_| "/auth/callback".into(), |u| u.to_string())
}

#[derive(Debug, Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn oidc_callback(
    State(st): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    ctx: WriteCtx,
    Query(q): Query<Callback>,
) -> Result<Response, WebError> {
    if let Err(wait) = st.web.limits.signin.check(&addr) {
        return Ok(limited(wait));
    }
    let refused = |m: String| WebError::new(StatusCode::BAD_REQUEST, "Sign-in failed", m);
    if let Some(e) = q.error {
        return Err(refused(format!(
            "The sign-in provider answered `{e}`{}.",
            q.error_description
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        )));
    }
    let (Some(code), Some(state)) = (q.code, q.state) else {
        return Err(refused(
            "The sign-in answer lacks its code or state.".into(),
        ));
    };
    let kept = st
        .service
        .store()
        .take_one_time(&token_hash(&state), "oidc", now_ms())
        .await?
        .ok_or_else(|| {
            refused("This sign-in link is unknown, used or expired. Start again.".into())
        })?;
    let bound = cookie(&headers, PRE_COOKIE)
        .is_some_and(|pre| kept["pre"].as_str() == Some(token_hash(&pre).as_str()));
    if !bound {
        return Err(refused(
            "This sign-in was started in another browser. Start again here.".into(),
        ));
    }
    let policy = st.service.policy();
    let cfg = policy
        .config
        .oidc
        .as_ref()
        .ok_or_else(|| WebError::not_found("single sign-on is not configured"))?;
    let principal = st
        .web
        .oidc
        .finish(
            cfg,
            &policy.config.secrets,
            &redirect_uri(&st),
            &code,
            &kept,
        )
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "OIDC sign-in failed");
            refused(e)
        })?;
    let next = safe_next(kept["next"].as_str());
    start_session(&st, &principal, &ctx, &next).await
}

async fn signout(
    State(st): State<AppState>,
    user: WebUser,
    ctx: WriteCtx,
    WebForm(f): WebForm<CsrfForm>,
) -> Result<Response, WebError> {
    user.check_csrf(&f.csrf)?;
    if let Some(id) = &user.caller.token_id {
        st.service.revoke_token(&user.caller, id, &ctx).await?;
    }
    let mut res = see_other("/signin?error=signed_out");
    res.headers_mut()
        .append(header::SET_COOKIE, st.web.clear_cookie(SESSION_COOKIE));
    Ok(res)
}

// ---------------------------------------------------------------------------------------------
// Home.

#[derive(Debug, Serialize)]
struct GrantView {
    id: String,
    entitlement: String,
    expires_at: String,
    expires_iso: String,
    expires_ms: Millis,
    time_left: String,
}

#[derive(Debug, Serialize)]
struct HomeView {
    grants: Vec<GrantView>,
    reviews: Vec<Row>,
    mine: Vec<Row>,
}

#[derive(Debug, Deserialize)]
struct FlashQuery {
    done: Option<String>,
}

fn flash(q: &FlashQuery) -> Option<String> {
    q.done.as_deref().map(|d| {
        match d {
            "ended" => "Your access has ended.",
            "cancelled" => "Your request is withdrawn.",
            "revoked" => "Access revoked.",
            "reviewed" => "Your review is recorded.",
            "token_revoked" => "Revoked.",
            "cli" => "The command line is signed in. You can close this tab.",
            _ => "Done.",
        }
        .to_owned()
    })
}

async fn home(
    State(st): State<AppState>,
    user: WebUser,
    Query(q): Query<FlashQuery>,
) -> Result<Response, WebError> {
    let now = now_ms();
    let mine = st
        .service
        .list(
            &user.caller,
            &ListQuery {
                scope: ListScope::Mine,
                limit: 50,
                ..ListQuery::default()
            },
        )
        .await?;
    let reviews = st
        .service
        .list(
            &user.caller,
            &ListQuery {
                scope: ListScope::Review,
                states: vec![ReqState::Pending],
                limit: 50,
                ..ListQuery::default()
            },
        )
        .await?;
    let grants = mine
        .iter()
        .filter(|r| r.is_active_at(now))
        .filter_map(|r| {
            r.grant.as_ref().map(|g| GrantView {
                id: r.id.clone(),
                entitlement: r.entitlement.clone(),
                expires_at: when(g.expires_at),
                expires_iso: iso(g.expires_at),
                expires_ms: g.expires_at,
                time_left: time_left(g.expires_at - now),
            })
        })
        .collect();
    let view = HomeView {
        grants,
        reviews: reviews.iter().map(row).collect(),
        mine: mine.iter().map(row).collect(),
    };
    let nav = Nav::of(&st, &user).await?;
    Ok(render(&st, "home", "Home", nav, flash(&q), view))
}

// ---------------------------------------------------------------------------------------------
// New request.

#[derive(Debug, Serialize)]
struct EntChoice {
    id: String,
    description: String,
    max_duration: String,
    default_duration: String,
    ticket_required: bool,
    selected: bool,
}

#[derive(Debug, Serialize, Deserialize, Default)]
struct RequestForm {
    #[serde(default, skip_serializing)]
    csrf: String,
    #[serde(default)]
    entitlement: String,
    #[serde(default)]
    duration: String,
    #[serde(default)]
    justification: String,
    #[serde(default)]
    ticket: String,
}

#[derive(Debug, Serialize)]
struct PreviewView {
    summary: String,
    stages: Vec<StageView>,
}

#[derive(Debug, Serialize)]
struct StageView {
    name: String,
    needed: u32,
    approved: usize,
    who: String,
}

#[derive(Debug, Serialize)]
struct NewRequestView {
    entitlements: Vec<EntChoice>,
    form: RequestForm,
    error: Option<String>,
    preview: Option<PreviewView>,
}

#[derive(Debug, Deserialize)]
struct NewQuery {
    entitlement: Option<String>,
}

async fn new_request_view(
    st: &AppState,
    user: &WebUser,
    form: RequestForm,
    error: Option<String>,
    preview: Option<PreviewView>,
    status: StatusCode,
) -> Result<Response, WebError> {
    let policy = st.service.policy();
    let entitlements = policy
        .config
        .entitlements
        .iter()
        .filter(|e| e.rules.may_request(&user.caller.principal))
        .map(|e| EntChoice {
            id: e.rules.id.clone(),
            description: e.description.clone(),
            max_duration: format_duration(e.rules.max_duration_secs),
            default_duration: format_duration(e.rules.default_duration_secs),
            ticket_required: e.rules.ticket_required,
            selected: e.rules.id == form.entitlement,
        })
        .collect();
    let view = NewRequestView {
        entitlements,
        form,
        error,
        preview,
    };
    let nav = Nav::of(st, user).await?;
    let mut res = render(st, "new_request", "Request access", nav, None, view);
    *res.status_mut() = status;
    Ok(res)
}

async fn new_request(
    State(st): State<AppState>,
    user: WebUser,
    Query(q): Query<NewQuery>,
) -> Result<Response, WebError> {
    let form = RequestForm {
        entitlement: q.entitlement.unwrap_or_default(),
        ..RequestForm::default()
    };
    new_request_view(&st, &user, form, None, None, StatusCode::OK).await
}

fn input(f: &RequestForm) -> Result<CreateInput, String> {
    if f.entitlement.is_empty() {
        return Err("Choose an entitlement.".into());
    }
    let duration_secs = match f.duration.trim() {
        "" => None,
        d => Some(parse_duration(d).map_err(|e| format!("Duration: {e}"))?),
    };
    Ok(CreateInput {
        entitlement: f.entitlement.clone(),
        duration_secs,
        justification: f.justification.clone(),
        ticket: Some(f.ticket.trim().to_owned()).filter(|t| !t.is_empty()),
    })
}

async fn preview(
    State(st): State<AppState>,
    user: WebUser,
    WebForm(f): WebForm<RequestForm>,
) -> Result<Response, WebError> {
    user.check_csrf(&f.csrf)?;
    let mut inp = match input(&f) {
        Ok(i) => i,
        Err(e) => {
            return new_request_view(&st, &user, f, Some(e), None, StatusCode::BAD_REQUEST).await;
        }
    };
    // The justification is not checked for the preview: answer who must approve first.
    if inp.justification.trim().is_empty() {
        inp.justification = "(preview)".into();
    }
    match st.service.preview(&user.caller, inp).await {
        Ok(outcome) => {
            let p = match outcome {
                PolicyOutcome::Approve { reason, .. } => PreviewView {
                    summary: format!("Approved at once: {reason}"),
                    stages: vec![],
                },
                PolicyOutcome::Deny { reason } => PreviewView {
                    summary: format!("Denied: {reason}"),
                    stages: vec![],
                },
                PolicyOutcome::Pending { requirements } => PreviewView {
                    summary: "Needs approval:".into(),
                    stages: requirements
                        .iter()
                        .map(|r| StageView {
                            name: r.name.clone(),
                            needed: r.needed,
                            approved: r.approved_by.len(),
                            who: who(r),
                        })
                        .collect(),
                },
                PolicyOutcome::Error { message, .. } => PreviewView {
                    summary: format!(
                        "The approval policy failed, so it would be denied: {message}"
                    ),
                    stages: vec![],
                },
            };
            new_request_view(&st, &user, f, None, Some(p), StatusCode::OK).await
        }
        Err(e) => {
            let e = WebError::from(e);
            new_request_view(&st, &user, f, Some(e.message), None, e.status).await
        }
    }
}

async fn create(
    State(st): State<AppState>,
    user: WebUser,
    ctx: WriteCtx,
    WebForm(f): WebForm<RequestForm>,
) -> Result<Response, WebError> {
    user.check_csrf(&f.csrf)?;
    let inp = match input(&f) {
        Ok(i) => i,
        Err(e) => {
            return new_request_view(&st, &user, f, Some(e), None, StatusCode::BAD_REQUEST).await;
        }
    };
    match st
        .service
        .create_request(&user.caller, inp, Channel::Web, &ctx)
        .await
    {
        Ok(r) => Ok(see_other(&format!("/requests/{}", r.id))),
        Err(e) => {
            let e = WebError::from(e);
            if e.status.is_client_error() {
                new_request_view(&st, &user, f, Some(e.message), None, e.status).await
            } else {
                Err(e)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One request.

#[derive(Debug, Serialize)]
struct ReqGrant {
    summary: String,
    expires_at: String,
    expires_iso: String,
    expires_ms: Millis,
    time_left: String,
}

#[derive(Debug, Serialize)]
struct ReviewView {
    reviewer: String,
    verdict: String,
    at: String,
    channel: String,
    comment: Option<String>,
}

#[derive(Debug, Serialize)]
struct ReqView {
    id: String,
    entitlement: String,
    state: String,
    active: bool,
    requester: String,
    duration: String,
    justification: String,
    ticket: Option<String>,
    created_at: String,
    reason: Option<String>,
    approval_reason: Option<String>,
    grant: Option<ReqGrant>,
    revocation: Option<String>,
    requirements: Vec<StageView>,
    reviews: Vec<ReviewView>,
    action: Option<ActionFacts>,
}

/// What an approver must see of an action: exactly what will run.
#[derive(Debug, Serialize)]
struct ActionFacts {
    parameters: Vec<ParamView>,
    digest: String,
    pipeline: Option<String>,
    valid_until: Option<String>,
    consumed: Option<String>,
}

#[derive(Debug, Serialize)]
struct ParamView {
    name: String,
    value: String,
}

fn action_facts(r: &crate::domain::Request) -> Option<ActionFacts> {
    let a = r.action.as_ref()?;
    Some(ActionFacts {
        parameters: a
            .parameters
            .iter()
            .map(|(k, v)| ParamView {
                name: k.clone(),
                value: match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                },
            })
            .collect(),
        digest: a.digest.clone(),
        pipeline: a.workload.as_ref().map(|w| {
            let mut s = format!("{} (issuer {})", w.subject, w.issuer);
            if let Some(by) = &w.started_by {
                s.push_str(&format!(", started by {by}"));
            }
            s
        }),
        valid_until: a.valid_until.map(when),
        consumed: a.consumed_at.map(|t| {
            format!(
                "{} by {}",
                when(t),
                a.consumed_by.as_deref().unwrap_or("its holder")
            )
        }),
    })
}

#[derive(Debug, Serialize)]
struct Can {
    review: bool,
    end: bool,
    cancel: bool,
    revoke: bool,
}

#[derive(Debug, Serialize)]
struct Event {
    at: String,
    actor: String,
    action: String,
    detail: Option<String>,
}

#[derive(Debug, Serialize)]
struct RequestPage {
    r: ReqView,
    can: Can,
    timeline: Vec<Event>,
}

fn detail(after: &Value) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(s) = after.get("state").and_then(Value::as_str) {
        parts.push(format!("→ {s}"));
    }
    for k in ["verdict", "comment", "reason", "summary", "error"] {
        if let Some(s) = after.get(k).and_then(Value::as_str) {
            parts.push(format!("{k}: {s}"));
        }
    }
    (!parts.is_empty()).then(|| parts.join(" · "))
}

async fn request_page(
    State(st): State<AppState>,
    user: WebUser,
    Path(id): Path<String>,
    Query(q): Query<FlashQuery>,
) -> Result<Response, WebError> {
    let r = st.service.get(&user.caller, &id).await?;
    let now = now_ms();
    let p = &user.caller.principal;
    let mine = r.requester.id == p.id;
    let active = r.is_active_at(now);
    let can = Can {
        // The service decides; this only offers the form to those it may accept, by the
        // domain's own rule (pending, eligible, not yet reviewed, own only with break-glass).
        review: r.may_review(p),
        end: mine && active,
        cancel: mine && r.state == ReqState::Pending,
        revoke: matches!(r.state, ReqState::Approved | ReqState::Active)
            && (user.caller.roles.admin
                || r.reviews
                    .iter()
                    .any(|rv| rv.reviewer.id == p.id && rv.verdict == Verdict::Approve)),
    };
    let events = st
        .service
        .store()
        .audit(&AuditFilter {
            subject: Some(r.id.clone()),
            limit: 500,
            ..AuditFilter::default()
        })
        .await?;
    let timeline = events
        .iter()
        .map(|e| Event {
            at: when(e.at),
            actor: e.actor.clone(),
            action: e.action.clone(),
            detail: detail(&e.after),
        })
        .collect();
    let view = RequestPage {
        r: ReqView {
            id: r.id.clone(),
            entitlement: r.entitlement.clone(),
            state: r.state.as_str().to_owned(),
            active,
            requester: match &r.requester.name {
                Some(n) => format!("{n} ({})", r.requester.id),
                None => r.requester.id.clone(),
            },
            duration: format_duration(r.duration_secs),
            justification: r.justification.clone(),
            ticket: r.ticket.clone(),
            created_at: when(r.created_at),
            reason: r.reason.clone(),
            approval_reason: r.approval_reason.clone(),
            grant: r.grant.as_ref().map(|g| ReqGrant {
                summary: g.summary.clone(),
                expires_at: when(g.expires_at),
                expires_iso: iso(g.expires_at),
                expires_ms: g.expires_at,
                time_left: time_left(g.expires_at - now),
            }),
            revocation: r.revocation.as_ref().map(|v| {
                format!(
                    "{} at {}{}",
                    v.reason.as_str(),
                    when(v.requested_at),
                    if v.done_at.is_some() {
                        ", done"
                    } else {
                        ", pending"
                    }
                )
            }),
            requirements: r
                .requirements
                .iter()
                .map(|q| StageView {
                    name: q.name.clone(),
                    needed: q.needed,
                    approved: q.approved_by.len(),
                    who: who(q),
                })
                .collect(),
            reviews: r
                .reviews
                .iter()
                .map(|rv| ReviewView {
                    reviewer: rv.reviewer.id.clone(),
                    verdict: match rv.verdict {
                        Verdict::Approve => "approved".into(),
                        Verdict::Deny => "denied".into(),
                    },
                    at: when(rv.at),
                    channel: format!("{:?}", rv.channel).to_lowercase(),
                    comment: rv.comment.clone(),
                })
                .collect(),
            action: action_facts(&r),
        },
        can,
        timeline,
    };
    let nav = Nav::of(&st, &user).await?;
    let title = format!("{} request", r.entitlement);
    Ok(render(&st, "request", &title, nav, flash(&q), view))
}

#[derive(Debug, Deserialize)]
struct ReviewForm {
    #[serde(default)]
    csrf: String,
    verdict: String,
    #[serde(default)]
    comment: String,
}

async fn review(
    State(st): State<AppState>,
    user: WebUser,
    ctx: WriteCtx,
    Path(id): Path<String>,
    WebForm(f): WebForm<ReviewForm>,
) -> Result<Response, WebError> {
    user.check_csrf(&f.csrf)?;
    if let Err(wait) = st.web.limits.review.check(&user.caller.principal.id) {
        return Ok(limited(wait));
    }
    let Some(verdict) = Verdict::parse(&f.verdict) else {
        return Err(WebError::new(
            StatusCode::BAD_REQUEST,
            "That did not work",
            format!("`{}` is not approve or deny", f.verdict),
        ));
    };
    let comment = Some(f.comment).filter(|c| !c.trim().is_empty());
    if verdict == Verdict::Deny && comment.is_none() {
        return Err(WebError::new(
            StatusCode::BAD_REQUEST,
            "A denial needs a reason",
            "Write a comment for the requester, then deny. Nothing was changed.",
        ));
    }
    st.service
        .review(&user.caller, &id, verdict, comment, Channel::Web, &ctx)
        .await?;
    Ok(see_other(&format!("/requests/{id}?done=reviewed")))
}

async fn end(
    State(st): State<AppState>,
    user: WebUser,
    ctx: WriteCtx,
    Path(id): Path<String>,
    WebForm(f): WebForm<CsrfForm>,
) -> Result<Response, WebError> {
    user.check_csrf(&f.csrf)?;
    st.service
        .end(&user.caller, &id, Channel::Web, &ctx)
        .await?;
    Ok(see_other(&format!("/requests/{id}?done=ended")))
}

async fn cancel(
    State(st): State<AppState>,
    user: WebUser,
    ctx: WriteCtx,
    Path(id): Path<String>,
    WebForm(f): WebForm<CsrfForm>,
) -> Result<Response, WebError> {
    user.check_csrf(&f.csrf)?;
    st.service
        .cancel(&user.caller, &id, Channel::Web, &ctx)
        .await?;
    Ok(see_other(&format!("/requests/{id}?done=cancelled")))
}

#[derive(Debug, Deserialize)]
struct RevokeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
}

async fn revoke(
    State(st): State<AppState>,
    user: WebUser,
    ctx: WriteCtx,
    Path(id): Path<String>,
    WebForm(f): WebForm<RevokeForm>,
) -> Result<Response, WebError> {
    user.check_csrf(&f.csrf)?;
    st.service
        .revoke(&user.caller, &id, f.reason, Channel::Web, &ctx)
        .await?;
    Ok(see_other(&format!("/requests/{id}?done=revoked")))
}

// ---------------------------------------------------------------------------------------------
// Approvals, catalog.

#[derive(Debug, Serialize)]
struct ApprovalsView {
    rows: Vec<Row>,
    count: usize,
}

async fn approvals(State(st): State<AppState>, user: WebUser) -> Result<Response, WebError> {
    let list = st
        .service
        .list(
            &user.caller,
            &ListQuery {
                scope: ListScope::Review,
                states: vec![ReqState::Pending],
                limit: 200,
                ..ListQuery::default()
            },
        )
        .await?;
    let view = ApprovalsView {
        count: list.len(),
        rows: list.iter().map(row).collect(),
    };
    let nav = Nav::of(&st, &user).await?;
    Ok(render(&st, "approvals", "Approvals", nav, None, view))
}

#[derive(Debug, Serialize)]
struct CatalogRow {
    id: String,
    id_enc: String,
    description: String,
    max_duration: String,
    default_duration: String,
    connector: String,
    ticket_required: bool,
    may_request: bool,
}

#[derive(Debug, Serialize)]
struct CatalogView {
    rows: Vec<CatalogRow>,
}

async fn catalog(State(st): State<AppState>, user: WebUser) -> Result<Response, WebError> {
    let policy = st.service.policy();
    let rows = policy
        .config
        .entitlements
        .iter()
        .map(|e| CatalogRow {
            id: e.rules.id.clone(),
            id_enc: enc(&e.rules.id),
            description: e.description.clone(),
            max_duration: format_duration(e.rules.max_duration_secs),
            default_duration: format_duration(e.rules.default_duration_secs),
            connector: e.connector.plugin.clone(),
            ticket_required: e.rules.ticket_required,
            may_request: e.rules.may_request(&user.caller.principal),
        })
        .collect();
    let nav = Nav::of(&st, &user).await?;
    Ok(render(
        &st,
        "entitlements",
        "Entitlement catalog",
        nav,
        None,
        CatalogView { rows },
    ))
}

// ---------------------------------------------------------------------------------------------
// Audit log.

#[derive(Debug, Deserialize, Serialize, Default)]
struct AuditQuery {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    entitlement: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
}

#[derive(Debug, Serialize)]
struct AuditRow {
    seq: i64,
    at: String,
    actor: String,
    action: String,
    subject: String,
    link: Option<String>,
    channel: String,
}

#[derive(Debug, Serialize)]
struct AuditView {
    filters: AuditQuery,
    rows: Vec<AuditRow>,
    count: usize,
    /// The page is full: older events exist beyond it.
    more: bool,
    export: String,
    error: Option<String>,
}

/// Events on the audit page: the newest this many that match.
const AUDIT_PAGE: u32 = 500;
/// Events per read while streaming the export.
const EXPORT_PAGE: u32 = 2000;

/// The store's filter for the audit page's query, for auditors and admins only.
fn audit_filter(user: &WebUser, q: &AuditQuery) -> Result<AuditFilter, WebError> {
    if !(user.caller.roles.admin || user.caller.roles.auditor) {
        return Err(WebError::new(
            StatusCode::FORBIDDEN,
            "Not allowed",
            "The audit log is for auditors and admins. A request's own history is on its page.",
        ));
    }
    let time = |field: &str, s: &str| -> Result<Option<Millis>, WebError> {
        if s.trim().is_empty() {
            return Ok(None);
        }
        crate::http::api::parse_time(field, s.trim())
            .map(Some)
            .map_err(|e| WebError::new(StatusCode::BAD_REQUEST, "That did not work", e.message))
    };
    let actor = match q.actor.trim() {
        "" => None,
        a if a.contains(':') => Some(a.to_owned()),
        a => Some(format!("user:{a}")),
    };
    let entitlement = Some(q.entitlement.trim().to_owned()).filter(|e| !e.is_empty());
    Ok(AuditFilter {
        since: time("since", &q.since)?,
        until: time("until", &q.until)?,
        actor,
        entitlement,
        ..AuditFilter::default()
    })
}

async fn audit(
    State(st): State<AppState>,
    user: WebUser,
    Query(q): Query<AuditQuery>,
) -> Result<Response, WebError> {
    let (events, error) = match audit_filter(&user, &q) {
        Ok(filter) => {
            let newest = AuditFilter {
                newest_first: true,
                limit: AUDIT_PAGE,
                ..filter
            };
            (st.service.store().audit(&newest).await?, None)
        }
        Err(e) if e.status == StatusCode::BAD_REQUEST => (Vec::new(), Some(e.message)),
        Err(e) => return Err(e),
    };
    let rows: Vec<AuditRow> = events
        .iter()
        .map(|e| AuditRow {
            seq: e.seq,
            at: when(e.at),
            actor: e.actor.clone(),
            action: e.action.clone(),
            // Request ids have no `:`; other subjects (`token:…`) have no page.
            link: (!e.subject.contains(':')).then(|| format!("/requests/{}", enc(&e.subject))),
            subject: e.subject.clone(),
            channel: e.channel.clone(),
        })
        .collect();
    let export = format!(
        "/audit/export.jsonl?actor={}&entitlement={}&since={}&until={}",
        enc(&q.actor),
        enc(&q.entitlement),
        enc(&q.since),
        enc(&q.until)
    );
    let view = AuditView {
        count: rows.len(),
        more: rows.len() == AUDIT_PAGE as usize,
        rows,
        filters: q,
        export,
        error,
    };
    let nav = Nav::of(&st, &user).await?;
    Ok(render(&st, "audit", "Audit log", nav, None, view))
}

/// Every matching event, in chain order, read a page at a time with `after_seq` and streamed.
/// The first page is read before answering, so a failing store is an error page; a failure
/// later aborts the download rather than ending it as if complete.
async fn audit_export(
    State(st): State<AppState>,
    user: WebUser,
    Query(q): Query<AuditQuery>,
) -> Result<Response, WebError> {
    let filter = AuditFilter {
        limit: EXPORT_PAGE,
        ..audit_filter(&user, &q)?
    };
    let store = st.service.store().clone();
    let first = store.audit(&filter).await?;
    struct Cursor {
        page: Option<Vec<crate::audit::AuditRecord>>,
        filter: AuditFilter,
    }
    let stream = futures::stream::unfold(
        Some(Cursor {
            page: Some(first),
            filter,
        }),
        move |cursor| {
            let store = store.clone();
            async move {
                let mut c = cursor?;
                let page = match c.page.take() {
                    Some(p) => p,
                    None => match store.audit(&c.filter).await {
                        Ok(p) => p,
                        Err(e) => {
                            tracing::error!(error = %e, "the audit export failed midway");
                            return Some((
                                Err(std::io::Error::other("the audit log could not be read")),
                                None,
                            ));
                        }
                    },
                };
                let last = page.last()?.seq;
                let mut chunk = String::new();
                for e in &page {
                    chunk.push_str(&crate::http::views::audit(e).to_string());
                    chunk.push('\n');
                }
                let more = page.len() == EXPORT_PAGE as usize;
                c.filter.after_seq = Some(last);
                Some((Ok::<_, std::io::Error>(chunk), more.then_some(c)))
            }
        },
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"sallyport-audit.jsonl\"",
            ),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

// ---------------------------------------------------------------------------------------------
// Tokens.

#[derive(Debug, Serialize)]
struct TokenRow {
    id: String,
    name: String,
    kind: String,
    created_at: String,
    expires_at: String,
    last_used_at: String,
    status: String,
    revocable: bool,
    current: bool,
}

#[derive(Debug, Serialize)]
struct TokensView {
    rows: Vec<TokenRow>,
    server: String,
    /// The list is cut at [`TOKENS_SHOWN`].
    more: bool,
    retention_days: i64,
}

/// The tokens page lists the newest this many.
const TOKENS_SHOWN: u32 = 200;

async fn tokens(
    State(st): State<AppState>,
    user: WebUser,
    Query(q): Query<FlashQuery>,
) -> Result<Response, WebError> {
    let now = now_ms();
    let list = st
        .service
        .store()
        .list_tokens(&user.caller.principal.id, TOKENS_SHOWN)
        .await?;
    let rows = list
        .iter()
        .map(|t| {
            let status = if t.revoked_at.is_some() {
                "revoked"
            } else if now >= t.expires_at {
                "expired"
            } else {
                "active"
            };
            TokenRow {
                id: t.id.clone(),
                name: t.name.clone(),
                kind: match t.scope {
                    TokenScope::Api => "CLI / API token".into(),
                    TokenScope::Web => "browser session".into(),
                    TokenScope::Action => "pipeline wait token".into(),
                },
                created_at: when(t.created_at),
                expires_at: when(t.expires_at),
                last_used_at: t.last_used_at.map_or_else(|| "never".into(), when),
                status: status.into(),
                revocable: status == "active",
                current: user.caller.token_id.as_deref() == Some(t.id.as_str()),
            }
        })
        .collect();
    let view = TokensView {
        more: list.len() == TOKENS_SHOWN as usize,
        rows,
        server: st.web.public_url.as_str().trim_end_matches('/').to_owned(),
        retention_days: crate::service::TOKEN_RETENTION_MS / (24 * 3600 * 1000),
    };
    let nav = Nav::of(&st, &user).await?;
    Ok(render(
        &st,
        "tokens",
        "Sessions and tokens",
        nav,
        flash(&q),
        view,
    ))
}

async fn revoke_token(
    State(st): State<AppState>,
    user: WebUser,
    ctx: WriteCtx,
    Path(id): Path<String>,
    WebForm(f): WebForm<CsrfForm>,
) -> Result<Response, WebError> {
    user.check_csrf(&f.csrf)?;
    st.service.revoke_token(&user.caller, &id, &ctx).await?;
    if user.caller.token_id.as_deref() == Some(id.as_str()) {
        let mut res = see_other("/signin?error=signed_out");
        res.headers_mut()
            .append(header::SET_COOKIE, st.web.clear_cookie(SESSION_COOKIE));
        return Ok(res);
    }
    Ok(see_other("/tokens?done=token_revoked"))
}

// ---------------------------------------------------------------------------------------------
// The CLI's browser login.

#[derive(Debug, Deserialize, Serialize)]
struct CliLogin {
    #[serde(default, skip_serializing)]
    csrf: String,
    port: u16,
    state: String,
    code_challenge: String,
}

#[derive(Debug, Serialize)]
struct CliLoginView {
    port: u16,
    state: String,
    challenge: String,
    ttl: String,
}

fn check_cli(q: &CliLogin) -> Result<(), WebError> {
    let b64 = |s: &str, min: usize, max: usize| {
        (min..=max).contains(&s.len())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if q.port < 1024 || !b64(&q.state, 16, 128) || !b64(&q.code_challenge, 43, 43) {
        return Err(WebError::new(
            StatusCode::BAD_REQUEST,
            "This sign-in link is broken",
            "The command line sent a malformed port, state or challenge. Run `sallyport login` again.",
        ));
    }
    Ok(())
}

/// Pages of the CLI login may send the browser back to the CLI's loopback listener.
const CLI_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self' http://127.0.0.1:*; frame-ancestors 'none'; base-uri 'none'";

async fn cli_login_page(
    State(st): State<AppState>,
    user: WebUser,
    Query(q): Query<CliLogin>,
) -> Result<Response, WebError> {
    check_cli(&q)?;
    let view = CliLoginView {
        port: q.port,
        state: q.state,
        challenge: q.code_challenge,
        ttl: format_duration(st.service.policy().config.auth.token_ttl_secs),
    };
    let nav = Nav::of(&st, &user).await?;
    Ok(render_csp(
        &st,
        "cli_login",
        "Sign in the command line",
        nav,
        None,
        view,
        CLI_CSP,
    ))
}

async fn cli_login(
    State(st): State<AppState>,
    user: WebUser,
    ClientAddr(addr): ClientAddr,
    WebForm(f): WebForm<CliLogin>,
) -> Result<Response, WebError> {
    user.check_csrf(&f.csrf)?;
    if let Err(wait) = st.web.limits.signin.check(&addr) {
        return Ok(limited(wait));
    }
    check_cli(&f)?;
    let code = st
        .service
        .issue_cli_code(&user.caller, &f.code_challenge)
        .await?;
    // Only ever back to the loopback listener of the CLI, on the port it named.
    let to = format!(
        "http://127.0.0.1:{}/callback?code={}&state={}",
        f.port,
        enc(&code),
        enc(&f.state)
    );
    let mut res = see_other(&to);
    res.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CLI_CSP),
    );
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::super::templates::{TEMPLATES, Templates};
    use super::*;

    const EVIL: &str = "<script>alert(1)</script>";

    fn nav() -> Nav {
        Nav {
            user: Some(NavUser {
                id: "alice".into(),
                name: EVIL.into(),
            }),
            admin: true,
            auditor: true,
            csrf: "c".into(),
            approvals: 2,
            dev: true,
        }
    }

    fn row() -> Row {
        Row {
            id: "r1".into(),
            entitlement: "app/x".into(),
            requester: EVIL.into(),
            state: "pending".into(),
            duration: "1h".into(),
            created_at: "now".into(),
        }
    }

    fn stage() -> StageView {
        StageView {
            name: EVIL.into(),
            needed: 1,
            approved: 0,
            who: "group leads".into(),
        }
    }

    fn page<T: Serialize>(t: &Templates, name: &str, view: T) -> String {
        let p = Page {
            title: "t".into(),
            nav: nav(),
            flash: Some(EVIL.into()),
            view,
        };
        t.render(name, &p)
            .unwrap_or_else(|e| panic!("{name} does not render: {e}"))
    }

    /// Every page template, rendered from a sample of its typed view full of hostile text.
    fn rendered_pages(t: &Templates) -> Vec<(&'static str, String)> {
        let grant = || GrantView {
            id: "r1".into(),
            entitlement: "app/x".into(),
            expires_at: "later".into(),
            expires_iso: "2026-01-01T00:00:00Z".into(),
            expires_ms: 1,
            time_left: "5 min left".into(),
        };
        let mut rendered = vec![
            (
                "signin",
                page(
                    t,
                    "signin",
                    SigninView {
                        error: Some(EVIL.into()),
                        oidc: Some(EVIL.into()),
                        dev_users: vec![DevUser {
                            id: "a".into(),
                            label: EVIL.into(),
                        }],
                        pre_csrf: "p".into(),
                        next: "/".into(),
                        next_enc: "%2F".into(),
                    },
                ),
            ),
            (
                "home",
                page(
                    t,
                    "home",
                    HomeView {
                        grants: vec![grant()],
                        reviews: vec![row()],
                        mine: vec![row()],
                    },
                ),
            ),
            (
                "new_request",
                page(
                    t,
                    "new_request",
                    NewRequestView {
                        entitlements: vec![EntChoice {
                            id: "app/x".into(),
                            description: EVIL.into(),
                            max_duration: "1h".into(),
                            default_duration: "15m".into(),
                            ticket_required: true,
                            selected: true,
                        }],
                        form: RequestForm {
                            justification: EVIL.into(),
                            ..RequestForm::default()
                        },
                        error: Some(EVIL.into()),
                        preview: Some(PreviewView {
                            summary: EVIL.into(),
                            stages: vec![stage()],
                        }),
                    },
                ),
            ),
            (
                "request",
                page(
                    t,
                    "request",
                    RequestPage {
                        r: ReqView {
                            id: "r1".into(),
                            entitlement: "app/x".into(),
                            state: "active".into(),
                            active: true,
                            requester: EVIL.into(),
                            duration: "1h".into(),
                            justification: EVIL.into(),
                            ticket: Some(EVIL.into()),
                            created_at: "now".into(),
                            reason: Some(EVIL.into()),
                            approval_reason: Some(EVIL.into()),
                            grant: Some(ReqGrant {
                                summary: EVIL.into(),
                                expires_at: "later".into(),
                                expires_iso: "x".into(),
                                expires_ms: 1,
                                time_left: "1 min left".into(),
                            }),
                            revocation: Some(EVIL.into()),
                            requirements: vec![stage()],
                            reviews: vec![ReviewView {
                                reviewer: EVIL.into(),
                                verdict: "approved".into(),
                                at: "now".into(),
                                channel: "web".into(),
                                comment: Some(EVIL.into()),
                            }],
                            action: Some(ActionFacts {
                                parameters: vec![ParamView {
                                    name: EVIL.into(),
                                    value: EVIL.into(),
                                }],
                                digest: "sha256:00".into(),
                                pipeline: Some(EVIL.into()),
                                valid_until: Some("later".into()),
                                consumed: Some(EVIL.into()),
                            }),
                        },
                        can: Can {
                            review: true,
                            end: true,
                            cancel: true,
                            revoke: true,
                        },
                        timeline: vec![Event {
                            at: "now".into(),
                            actor: EVIL.into(),
                            action: "request.created".into(),
                            detail: Some(EVIL.into()),
                        }],
                    },
                ),
            ),
            (
                "approvals",
                page(
                    t,
                    "approvals",
                    ApprovalsView {
                        rows: vec![row()],
                        count: 1,
                    },
                ),
            ),
            (
                "entitlements",
                page(
                    t,
                    "entitlements",
                    CatalogView {
                        rows: vec![CatalogRow {
                            id: "app/x".into(),
                            id_enc: "app%2Fx".into(),
                            description: EVIL.into(),
                            max_duration: "1h".into(),
                            default_duration: "1h".into(),
                            connector: "http".into(),
                            ticket_required: true,
                            may_request: true,
                        }],
                    },
                ),
            ),
            (
                "audit",
                page(
                    t,
                    "audit",
                    AuditView {
                        filters: AuditQuery {
                            actor: EVIL.into(),
                            ..AuditQuery::default()
                        },
                        rows: vec![AuditRow {
                            seq: 1,
                            at: "now".into(),
                            actor: EVIL.into(),
                            action: "request.created".into(),
                            subject: EVIL.into(),
                            link: Some("/requests/r1".into()),
                            channel: "web".into(),
                        }],
                        count: 1,
                        more: true,
                        export: "/audit/export.jsonl".into(),
                        error: Some(EVIL.into()),
                    },
                ),
            ),
            (
                "tokens",
                page(
                    t,
                    "tokens",
                    TokensView {
                        rows: vec![TokenRow {
                            id: "t1".into(),
                            name: EVIL.into(),
                            kind: "browser session".into(),
                            created_at: "now".into(),
                            expires_at: "later".into(),
                            last_used_at: "never".into(),
                            status: "active".into(),
                            revocable: true,
                            current: true,
                        }],
                        server: "http://x".into(),
                        more: true,
                        retention_days: 30,
                    },
                ),
            ),
            (
                "cli_login",
                page(
                    t,
                    "cli_login",
                    CliLoginView {
                        port: 5000,
                        state: "s".into(),
                        challenge: "c".into(),
                        ttl: "12h".into(),
                    },
                ),
            ),
        ];
        let err = t
            .render(
                "error",
                &super::super::ErrorView {
                    title: "t".into(),
                    nav: Nav::anonymous(false),
                    flash: None,
                    heading: EVIL.into(),
                    message: EVIL.into(),
                    request_id: "rid".into(),
                },
            )
            .expect("error page");
        rendered.push(("error", err));
        for (name, view) in super::super::links::sample_views(EVIL) {
            rendered.push((name, page(t, name, view)));
        }
        rendered
    }

    /// Every page template renders from its typed view (strict mode: a field the template
    /// names and the view lacks fails), and hostile text comes out escaped.
    #[test]
    fn every_template_renders_and_escapes() {
        let t = Templates::new().expect("templates");
        let rendered = rendered_pages(&t);
        for (name, html) in &rendered {
            assert!(!html.contains(EVIL), "{name}: raw hostile text");
            assert!(
                html.contains("&lt;script&gt;"),
                "{name}: hostile text missing"
            );
            assert!(!html.contains("<script>"), "{name}: inline script");
        }
        // Every page template is covered (layout and request_table are partials).
        for (name, _) in TEMPLATES {
            assert!(
                matches!(*name, "layout" | "request_table")
                    || rendered.iter().any(|(n, _)| n == name),
                "template {name} has no render test"
            );
        }
        // Strict mode: a view missing a field the template needs is an error, not "".
        let missing =
            serde_json::json!({"title": "t", "flash": null, "nav": {"user": null, "dev": false}});
        let e = t.render("error", &missing).expect_err("strict mode");
        assert!(e.contains("heading"), "{e}");
    }

    /// Keyboard focus follows the reading order (no positive `tabindex` reorders it), and every
    /// page declares its language for screen readers.
    #[test]
    fn focus_follows_the_page_order_and_pages_declare_their_language() {
        let t = Templates::new().expect("templates");
        let tabindex = regex::Regex::new(r#"tabindex="(-?\d+)""#).expect("regex");
        let mut pages = 0;
        for (name, html) in rendered_pages(&t) {
            for c in tabindex.captures_iter(&html) {
                let n: i64 = c[1].parse().unwrap_or(1);
                assert!(n <= 0, "{name}: tabindex={n} takes focus out of page order");
            }
            if html.contains("<html") {
                pages += 1;
                assert!(html.contains("<html lang=\""), "{name}: no lang on <html>");
            }
        }
        assert!(
            pages >= 5,
            "only {pages} whole pages: is the check still looking?"
        );
    }

    /// Every form control a person fills in has a name for assistive technology: an `id` with
    /// a matching `<label for>`, or an `aria-label`.
    #[test]
    fn every_form_control_has_a_label() {
        let t = Templates::new().expect("templates");
        let control = regex::Regex::new(r"<(input|select|textarea)\b([^>]*)>").expect("regex");
        let attr = |attrs: &str, name: &str| {
            regex::Regex::new(&format!(r#"(?:^|\s){name}="([^"]*)""#))
                .expect("regex")
                .captures(attrs)
                .map(|c| c[1].to_owned())
        };
        let mut checked = 0;
        for (name, html) in rendered_pages(&t) {
            for c in control.captures_iter(&html) {
                let attrs = &c[2];
                if matches!(
                    attr(attrs, "type").as_deref(),
                    Some("hidden" | "submit" | "button")
                ) {
                    continue;
                }
                checked += 1;
                if attr(attrs, "aria-label").is_some_and(|l| !l.trim().is_empty()) {
                    continue;
                }
                let id = attr(attrs, "id").unwrap_or_else(|| {
                    panic!("{name}: `{}` has neither an id nor an aria-label", &c[0])
                });
                assert!(
                    html.contains(&format!("<label for=\"{id}\"")),
                    "{name}: no <label for=\"{id}\"> for `{}`",
                    &c[0]
                );
                assert_eq!(
                    html.matches(&format!(" id=\"{id}\"")).count(),
                    1,
                    "{name}: the id {id} is not unique"
                );
            }
        }
        assert!(
            checked >= 10,
            "only {checked} controls: is the check still looking?"
        );
    }

    /// Buttons and links repeated once per row say which row they act on, for screen readers
    /// that list them out of context.
    #[test]
    fn repeated_buttons_name_what_they_act_on() {
        let t = Templates::new().expect("templates");
        let pages = rendered_pages(&t);
        let html = |n: &str| {
            pages
                .iter()
                .find(|(name, _)| *name == n)
                .map(|(_, h)| h.clone())
                .unwrap_or_else(|| panic!("{n}"))
        };
        assert!(
            html("home").contains(r#"aria-label="End app/x now">End now</button>"#),
            "home"
        );
        assert!(
            html("tokens").contains(
                r#"aria-label="Revoke browser session &lt;script&gt;alert(1)&lt;/script&gt;, created now">Revoke</button>"#
            ),
            "tokens"
        );
        assert!(
            html("entitlements").contains(r#"aria-label="Request app/x">Request</a>"#),
            "catalog"
        );
    }

    /// `#rrggbb` or `#rgb` as linear-light relative luminance (WCAG 2.x).
    fn luminance(hex: &str) -> Option<f64> {
        let h = hex.trim().strip_prefix('#')?;
        let full: String = match h.len() {
            3 => h.chars().flat_map(|c| [c, c]).collect(),
            6 => h.to_owned(),
            _ => return None,
        };
        let channel = |i: usize| -> Option<f64> {
            let v = f64::from(u8::from_str_radix(full.get(i..i + 2)?, 16).ok()?) / 255.0;
            Some(if v <= 0.040_45 {
                v / 12.92
            } else {
                ((v + 0.055) / 1.055).powf(2.4)
            })
        };
        Some(0.2126 * channel(0)? + 0.7152 * channel(2)? + 0.0722 * channel(4)?)
    }

    fn contrast(a: &str, b: &str) -> f64 {
        let (la, lb) = (
            luminance(a).unwrap_or_else(|| panic!("not a colour: {a}")),
            luminance(b).unwrap_or_else(|| panic!("not a colour: {b}")),
        );
        (la.max(lb) + 0.05) / (la.min(lb) + 0.05)
    }

    #[test]
    fn contrast_is_computed_as_wcag_defines_it() {
        assert!((contrast("#000", "#fff") - 21.0).abs() < 1e-9);
        assert!((contrast("#777777", "#ffffff") - 4.48).abs() < 0.01);
    }

    /// The stylesheet's text colours meet WCAG AA (4.5:1) on the backgrounds they are used
    /// on, and the focus ring is visible (3:1) both on white pages and in the dark header.
    #[test]
    fn stylesheet_colours_meet_wcag_contrast() {
        let css = super::super::templates::STATIC
            .iter()
            .find(|(n, _, _)| *n == "app.css")
            .map(|(_, _, body)| *body)
            .expect("app.css");
        let vars: std::collections::HashMap<String, String> =
            regex::Regex::new(r"--([a-z-]+):\s*(#[0-9a-fA-F]{3,6})\b")
                .expect("regex")
                .captures_iter(css)
                .map(|c| (c[1].to_owned(), c[2].to_owned()))
                .collect();
        let resolve = |v: &str| -> Option<String> {
            let v = v.trim();
            match v.strip_prefix("var(--").and_then(|r| r.strip_suffix(')')) {
                Some(name) => vars.get(name).cloned(),
                None => luminance(v).map(|_| v.to_owned()),
            }
        };
        let var = |n: &str| vars.get(n).cloned().unwrap_or_else(|| panic!("--{n}"));
        // Text colours on the page and on panels (cards, table heads).
        for fg in ["fg", "muted", "accent", "danger", "ok", "warn"] {
            for bg in ["bg", "panel"] {
                let c = contrast(&var(fg), &var(bg));
                assert!(c >= 4.5, "--{fg} on --{bg}: {c:.2}:1");
            }
        }
        // Every rule that sets a background: its text colour (inherited --fg if unset) on it.
        let mut rules = std::collections::HashMap::new();
        for block in css.split('}') {
            let Some((selector, decls)) = block.rsplit_once('{') else {
                continue;
            };
            let decl = |key: &str| {
                decls
                    .split(';')
                    .filter_map(|d| d.split_once(':'))
                    .find(|(k, _)| k.trim() == key)
                    .map(|(_, v)| v.trim().to_owned())
            };
            let Some(bg) = decl("background")
                .or_else(|| decl("background-color"))
                .and_then(|b| resolve(&b))
            else {
                continue;
            };
            let fg = decl("color")
                .and_then(|c| resolve(&c))
                .unwrap_or_else(|| var("fg"));
            let selector = selector.trim().to_owned();
            let c = contrast(&fg, &bg);
            assert!(c >= 4.5, "`{selector}`: {fg} on {bg} is {c:.2}:1");
            rules.insert(selector, bg);
        }
        assert!(
            rules.len() >= 8,
            "only {} rules with a background",
            rules.len()
        );
        // Focus: the outer ring against the page, the inner one against the header (non-text
        // contrast, 3:1). The focus rule must draw both.
        let header = rules.get("header.top").expect("the header's background");
        let focus_rule = css
            .lines()
            .find(|l| l.starts_with(":focus-visible"))
            .expect(":focus-visible rule");
        assert!(
            focus_rule.contains("var(--focus)") && focus_rule.contains("var(--focus-ring)"),
            "{focus_rule}"
        );
        let outer = contrast(&var("focus-ring"), &var("bg"));
        assert!(outer >= 3.0, "focus ring on the page: {outer:.2}:1");
        let inner = contrast(&var("focus"), header);
        assert!(inner >= 3.0, "focus ring in the header: {inner:.2}:1");
    }
}
