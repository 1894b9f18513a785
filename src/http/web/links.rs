//! E-mailed approval links, and the dev-mode outbox.
//!
//! `GET /link/{token}` never acts (mail scanners fetch links): it shows what the link would do
//! and a form; the form's POST acts, after every check again and a CSRF check. A link works
//! only for the reviewer it was sent to (signed in), unless its entitlement sets
//! `link_only_approval`; once, while the request is pending and the link unexpired. Every
//! refusal is a page that says why, and changes nothing.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::pages::{Nav, limited, pre_ok, render, see_other, when};
use super::{PRE_COOKIE, WebError, WebForm, WebUser, cookie, csrf_for, enc, html_headers};
use crate::domain::{Channel, State as ReqState, Verdict, clean_comment, format_duration};
use crate::http::AppState;
use crate::secret::random_b64;
use crate::service::{Caller, now_ms, token_hash};
use crate::store::{ApprovalLink, WriteCtx};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/link/{token}", get(link_page).post(link_act))
        .route("/outbox", get(outbox))
        .route("/outbox/{id}", get(outbox_html))
}

/// A link token: 43 base64url characters (256 bits).
fn token_shape(t: &str) -> bool {
    t.len() == 43
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn invalid() -> WebError {
    WebError::new(
        StatusCode::NOT_FOUND,
        "This link is not valid",
        "Sallyport does not know this approval link: it may be incomplete or altered. Open the request from Sallyport instead. Nothing was changed.",
    )
}

struct Loaded {
    link: ApprovalLink,
    request: crate::domain::Request,
    link_only: bool,
}

async fn load(st: &AppState, token: &str) -> Result<Loaded, WebError> {
    if !token_shape(token) {
        return Err(invalid());
    }
    let store = st.service.store();
    let link = store
        .find_link(&token_hash(token))
        .await?
        .ok_or_else(invalid)?;
    let request = store
        .get_request(&link.request_id)
        .await?
        .ok_or_else(invalid)?;
    let link_only = st
        .service
        .policy()
        .config
        .review_settings(&request)
        .is_some_and(|e| e.link_only_approval);
    Ok(Loaded {
        link,
        request,
        link_only,
    })
}

/// Why this link cannot act now, if it cannot. Order matters: a decided request says so first.
fn refusal(l: &Loaded, now: i64) -> Option<WebError> {
    let r = &l.request;
    if r.state != ReqState::Pending {
        return Some(WebError::new(
            StatusCode::CONFLICT,
            "This request was already decided",
            format!(
                "The request of {} for {} is {} now, so this link no longer does anything. Nothing was changed.",
                r.requester.id,
                r.entitlement,
                r.state.as_str().replace('_', " ")
            ),
        ));
    }
    if l.link.used_at.is_some() {
        return Some(WebError::new(
            StatusCode::CONFLICT,
            "This link was already used",
            "Each approval link works once. Open the request in Sallyport to see where it stands. Nothing was changed.",
        ));
    }
    if now >= l.link.expires_at {
        return Some(WebError::new(
            StatusCode::GONE,
            "This link has expired",
            "Approval links expire with the request they are about. Nothing was changed.",
        ));
    }
    None
}

/// Who acts: the signed-in reviewer; or, for link-only entitlements with nobody signed in, the
/// reviewer the link was sent to. `Err(Response)` is a refusal or a redirect to sign in.
enum Who {
    Session(WebUser),
    LinkOnly(Caller),
}

async fn who(st: &AppState, headers: &HeaderMap, l: &Loaded, token: &str) -> Result<Who, Response> {
    let session = WebUser::of_session(st, headers)
        .await
        .map_err(IntoResponse::into_response)?;
    match session {
        Some(u) if u.caller.principal.id != l.link.reviewer => Err(WebError::new(
            StatusCode::FORBIDDEN,
            "This link is not for you",
            format!(
                "It was sent to {}, and you are signed in as {}. Approval links work only for the person they were sent to. Nothing was changed.",
                l.link.reviewer, u.caller.principal.id
            ),
        )
        .into_response()),
        Some(u) => {
            if l.request.may_review(&u.caller.principal) {
                Ok(Who::Session(u))
            } else {
                Err(cannot_review().into_response())
            }
        }
        None if l.link_only => {
            // Act as the reviewer as known now (the directory, or their latest sign-in), never
            // as the copy made when the mail was sent; unknown now means sign in.
            let principal = st
                .service
                .known_person(&l.link.reviewer)
                .await
                .map_err(|e| WebError::from(e).into_response())?;
            let Some(principal) = principal else {
                return Err(Redirect::to(&format!(
                    "/signin?next={}",
                    enc(&format!("/link/{token}"))
                ))
                .into_response());
            };
            if !l.request.may_review(&principal) {
                return Err(cannot_review().into_response());
            }
            Ok(Who::LinkOnly(Caller {
                roles: st.service.policy().roles(&principal),
                principal,
                token_id: None,
            }))
        }
        None => Err(Redirect::to(&format!("/signin?next={}", enc(&format!("/link/{token}"))))
            .into_response()),
    }
}

/// What GET and POST both check first: the link, that it can still act, and who would act.
/// `Err` is a refusal page or a redirect to sign in.
async fn prepare(
    st: &AppState,
    headers: &HeaderMap,
    token: &str,
) -> Result<(Loaded, Who, Verdict), Response> {
    let l = load(st, token).await.map_err(IntoResponse::into_response)?;
    if let Some(e) = refusal(&l, now_ms()) {
        return Err(e.into_response());
    }
    let who = who(st, headers, &l, token).await?;
    let verdict = Verdict::parse(&l.link.action).ok_or_else(|| invalid().into_response())?;
    Ok((l, who, verdict))
}

fn cannot_review() -> WebError {
    WebError::new(
        StatusCode::FORBIDDEN,
        "You cannot review this request now",
        "The approval policy does not list you as a reviewer of this request (any more), or you have reviewed it already. Nothing was changed.",
    )
}

#[derive(Debug, Serialize)]
struct LinkView {
    approve: bool,
    verb: String,
    request_id: String,
    entitlement: String,
    requester: String,
    duration: String,
    justification: String,
    ticket: Option<String>,
    filed: String,
    expires: String,
    reviewer: String,
    link_only: bool,
    signed_in: bool,
    csrf: String,
    action: String,
}

async fn link_page(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Result<Response, WebError> {
    let (l, who, verdict) = match prepare(&st, &headers, &token).await {
        Ok(p) => p,
        Err(res) => return Ok(res),
    };
    let r = &l.request;
    let (nav, csrf, signed_in, set_pre) = match &who {
        Who::Session(u) => (Nav::of(&st, u).await?, u.csrf.clone(), true, None),
        Who::LinkOnly(_) => {
            let (pre, set) = match cookie(&headers, PRE_COOKIE) {
                Some(p) => (p, false),
                None => (random_b64(), true),
            };
            let csrf = csrf_for(&pre);
            (Nav::anonymous(st.dev), csrf, false, set.then_some(pre))
        }
    };
    let view = LinkView {
        approve: verdict == Verdict::Approve,
        verb: if verdict == Verdict::Approve {
            "Approve".into()
        } else {
            "Deny".into()
        },
        request_id: r.id.clone(),
        entitlement: r.entitlement.clone(),
        requester: r
            .requester
            .name
            .clone()
            .unwrap_or_else(|| r.requester.id.clone()),
        duration: format_duration(r.duration_secs),
        justification: r.justification.clone(),
        ticket: r.ticket.clone(),
        filed: when(r.created_at),
        expires: when(l.link.expires_at),
        reviewer: l.link.reviewer.clone(),
        link_only: l.link_only,
        signed_in,
        csrf,
        action: format!("/link/{token}"),
    };
    let title = format!("{} {}", view.verb, r.entitlement);
    let mut res = render(&st, "link", &title, nav, None, view);
    res.headers_mut().insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    if let Some(pre) = set_pre {
        res.headers_mut()
            .append(header::SET_COOKIE, st.web.cookie(PRE_COOKIE, &pre, 3600));
    }
    Ok(res)
}

#[derive(Debug, Deserialize)]
struct LinkForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    comment: String,
}

#[derive(Debug, Serialize)]
struct DoneView {
    verb: String,
    entitlement: String,
    state: String,
}

async fn link_act(
    State(st): State<AppState>,
    headers: HeaderMap,
    ctx: WriteCtx,
    Path(token): Path<String>,
    WebForm(f): WebForm<LinkForm>,
) -> Result<Response, WebError> {
    let (l, who, verdict) = match prepare(&st, &headers, &token).await {
        Ok(p) => p,
        Err(res) => return Ok(res),
    };
    let csrf_ok = match &who {
        Who::Session(u) => u.check_csrf(&f.csrf).is_ok(),
        Who::LinkOnly(_) => pre_ok(&headers, &f.csrf),
    };
    if !csrf_ok {
        return Err(WebError::new(
            StatusCode::FORBIDDEN,
            "This form cannot be accepted",
            "The form did not carry a valid security token (CSRF), so nothing was changed. Open the link from your e-mail again.",
        ));
    }
    if let Err(wait) = st.web.limits.review.check(&l.link.reviewer) {
        return Ok(limited(wait));
    }
    let comment = Some(f.comment).filter(|c| !c.trim().is_empty());
    if verdict == Verdict::Deny && comment.is_none() {
        return Err(WebError::new(
            StatusCode::BAD_REQUEST,
            "A denial needs a reason",
            "Go back, write a comment for the requester, then deny. Nothing was changed; the link still works.",
        ));
    }
    // Everything that can be checked is checked before the link is used up.
    let comment = clean_comment(comment.as_deref()).map_err(|e| {
        WebError::new(
            StatusCode::BAD_REQUEST,
            "That comment cannot be accepted",
            format!("{e}. Nothing was changed; the link still works."),
        )
    })?;
    if !st.service.store().use_link(&l.link.hash, now_ms()).await? {
        return Err(WebError::new(
            StatusCode::CONFLICT,
            "This link was already used",
            "Each approval link works once. Nothing was changed.",
        ));
    }
    let (caller, channel) = match &who {
        Who::Session(u) => (u.caller.clone(), Channel::EmailLink),
        Who::LinkOnly(c) => (c.clone(), Channel::EmailLinkOnly),
    };
    let r = st
        .service
        .review(&caller, &l.request.id, verdict, comment, channel, &ctx)
        .await
        .map_err(|e| {
            let mut w = WebError::from(e);
            w.message = format!(
                "{} The link was used up: open the request in Sallyport to review it there.",
                w.message
            );
            w
        })?;
    match who {
        Who::Session(_) => Ok(see_other(&format!("/requests/{}?done=reviewed", r.id))),
        Who::LinkOnly(_) => {
            let view = DoneView {
                verb: if verdict == Verdict::Approve {
                    "approved".into()
                } else {
                    "denied".into()
                },
                entitlement: r.entitlement.clone(),
                state: r.state.as_str().replace('_', " "),
            };
            Ok(render(
                &st,
                "link_done",
                "Review recorded",
                Nav::anonymous(st.dev),
                None,
                view,
            ))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Dev-mode outbox.

#[derive(Debug, Serialize)]
struct OutLink {
    label: String,
    url: String,
}

#[derive(Debug, Serialize)]
struct OutMessage {
    id: i64,
    recipient: String,
    subject: String,
    at: String,
    text: String,
    links: Vec<OutLink>,
}

#[derive(Debug, Serialize)]
struct OutboxView {
    messages: Vec<OutMessage>,
}

/// `Label: URL` lines of a plain-text message, as links.
fn links_in(text: &str) -> Vec<OutLink> {
    text.lines()
        .filter_map(|line| {
            let at = line.find("http://").or_else(|| line.find("https://"))?;
            let url = line[at..].split_whitespace().next()?.to_owned();
            let label = line[..at].trim().trim_end_matches(':').trim().to_owned();
            Some(OutLink {
                label: if label.is_empty() { url.clone() } else { label },
                url,
            })
        })
        .collect()
}

fn dev_only(st: &AppState) -> Result<(), WebError> {
    if st.dev {
        Ok(())
    } else {
        Err(WebError::not_found(
            "the outbox exists only in dev mode without a mail server",
        ))
    }
}

async fn outbox(State(st): State<AppState>, headers: HeaderMap) -> Result<Response, WebError> {
    dev_only(&st)?;
    let messages = st
        .service
        .store()
        .outbox(100)
        .await?
        .into_iter()
        .map(|m| OutMessage {
            id: m.id,
            links: links_in(&m.text_body)
                .into_iter()
                .filter(|l| l.url.starts_with(st.web.public_url.as_str()))
                .collect(),
            recipient: m.recipient,
            subject: m.subject,
            at: when(m.created_at),
            text: m.text_body,
        })
        .collect();
    let nav = match WebUser::of_session(&st, &headers).await? {
        Some(u) => Nav::of(&st, &u).await?,
        None => Nav::anonymous(st.dev),
    };
    Ok(render(
        &st,
        "outbox",
        "Outbox",
        nav,
        None,
        OutboxView { messages },
    ))
}

/// One message's HTML part, as the recipient would see it: sandboxed (no script, its own
/// origin), inline styles allowed as in a mail client.
async fn outbox_html(
    State(st): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Response, WebError> {
    dev_only(&st)?;
    let m = st
        .service
        .store()
        .outbox_message(id)
        .await?
        .ok_or_else(|| WebError::not_found("no such message"))?;
    Ok((
        StatusCode::OK,
        html_headers(
            "sandbox allow-top-navigation-by-user-activation allow-popups; default-src 'none'; style-src 'unsafe-inline'; img-src data:",
        ),
        m.html_body,
    )
        .into_response())
}

/// Every view of this module with `evil` in each text field (for the template render test).
#[cfg(test)]
pub(super) fn sample_views(evil: &str) -> Vec<(&'static str, serde_json::Value)> {
    let link = LinkView {
        approve: false,
        verb: "Deny".into(),
        request_id: "r1".into(),
        entitlement: evil.into(),
        requester: evil.into(),
        duration: "1 h".into(),
        justification: evil.into(),
        ticket: Some(evil.into()),
        filed: "now".into(),
        expires: "later".into(),
        reviewer: evil.into(),
        link_only: true,
        signed_in: false,
        csrf: "c".into(),
        action: "/link/x".into(),
    };
    let done = DoneView {
        verb: "approved".into(),
        entitlement: evil.into(),
        state: "approved".into(),
    };
    let outbox = OutboxView {
        messages: vec![OutMessage {
            id: 1,
            recipient: evil.into(),
            subject: evil.into(),
            at: "now".into(),
            text: evil.into(),
            links: links_in("Approve: http://127.0.0.1/link/abc"),
        }],
    };
    let v = |x: serde_json::Result<serde_json::Value>| x.unwrap_or(serde_json::Value::Null);
    vec![
        ("link", v(serde_json::to_value(link))),
        ("link_done", v(serde_json::to_value(done))),
        ("outbox", v(serde_json::to_value(outbox))),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shape_is_exactly_256_bits_of_base64url() {
        assert!(token_shape(&random_b64()));
        assert!(!token_shape(""));
        assert!(!token_shape(&"a".repeat(42)));
        assert!(!token_shape(&format!("{}=", &"a".repeat(42))));
        assert!(!token_shape(&"a/".repeat(22)[..43]));
    }

    #[test]
    fn outbox_lists_labelled_links() {
        let l = links_in(
            "Approve: http://x/link/a\nDeny:    http://x/link/b\nRequest: https://x/r/1 \nno link",
        );
        let got: Vec<(String, String)> = l.into_iter().map(|l| (l.label, l.url)).collect();
        assert_eq!(
            got,
            vec![
                ("Approve".into(), "http://x/link/a".into()),
                ("Deny".into(), "http://x/link/b".into()),
                ("Request".into(), "https://x/r/1".into()),
            ]
        );
    }
}
