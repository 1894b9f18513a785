//! Dev mode only: sign in as a directory user without a password, and a small demo target that
//! the `http` connector grants access in, so the whole lifecycle works with no cloud at all.

use std::collections::BTreeMap;
use std::sync::Mutex;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::api::ApiJson;
use super::error::ApiError;
use crate::domain::Channel;
use crate::secret::Secret;
use crate::store::WriteCtx;

/// Routes mounted only in dev mode, as `(method, path)`.
pub const DEV_ROUTES: &[(&str, &str)] = &[
    ("get", "/api/v1/dev/users"),
    ("post", "/api/v1/dev/login"),
    ("get", "/demo/target/grants"),
    ("put", "/demo/target/grants/{id}"),
    ("delete", "/demo/target/grants/{id}"),
];

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/dev/users", get(users))
        .route("/api/v1/dev/login", post(login))
        .route("/demo/target/grants", get(list_grants))
        .route(
            "/demo/target/grants/{id}",
            put(put_grant).delete(delete_grant),
        )
}

async fn users(State(st): State<AppState>) -> Json<Value> {
    let policy = st.service.policy();
    let users: Vec<Value> = policy
        .config
        .users
        .iter()
        .map(|u| {
            let p = policy.directory_principal(&u.id);
            let roles = p.as_ref().map(|p| policy.roles(p)).unwrap_or_default();
            json!({ "id": u.id, "name": u.name, "email": u.email, "groups": u.groups,
                    "admin": roles.admin, "auditor": roles.auditor })
        })
        .collect();
    Json(json!({ "users": users }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    user: String,
    token_name: Option<String>,
}

async fn login(
    State(st): State<AppState>,
    ctx: WriteCtx,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let policy = st.service.policy();
    let principal = policy.directory_principal(&body.user).ok_or_else(|| {
        let known: Vec<&str> = policy.config.users.iter().map(|u| u.id.as_str()).collect();
        ApiError::not_found(format!(
            "no dev user `{}`; dev users: {}",
            body.user,
            known.join(", ")
        ))
    })?;
    let (token, rec) = st
        .service
        .issue_token(
            &principal,
            body.token_name.as_deref().unwrap_or("dev login"),
            policy.config.auth.token_ttl_secs,
            Channel::Api,
            &ctx,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "token": token,
            "token_id": rec.id,
            "user": principal,
            "expires_at": super::views::time(rec.expires_at),
        })),
    ))
}

/// The dev server's demo target: grants are rows in memory, guarded by an API key
/// (`x-api-key`), which the `http` connector's host injects as a secret.
#[derive(Debug)]
pub struct DemoTarget {
    token: Secret,
    grants: Mutex<BTreeMap<String, Value>>,
}

impl DemoTarget {
    /// A target that accepts `token`.
    pub fn new(token: Secret) -> Self {
        DemoTarget {
            token,
            grants: Mutex::new(BTreeMap::new()),
        }
    }

    fn check(&self, headers: &HeaderMap) -> Result<(), (StatusCode, Json<Value>)> {
        let ok = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t == self.token.expose());
        if ok {
            Ok(())
        } else {
            Err((
                StatusCode::UNAUTHORIZED,
                Json(json!({ "error": "missing or wrong x-api-key" })),
            ))
        }
    }

    /// The grants in place now.
    pub fn grants(&self) -> BTreeMap<String, Value> {
        self.grants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

type DemoResult = Result<(StatusCode, Json<Value>), (StatusCode, Json<Value>)>;

fn demo(st: &AppState) -> Result<&DemoTarget, (StatusCode, Json<Value>)> {
    st.demo.as_deref().ok_or((
        StatusCode::NOT_FOUND,
        Json(json!({ "error": "no demo target" })),
    ))
}

async fn list_grants(State(st): State<AppState>, headers: HeaderMap) -> DemoResult {
    let d = demo(&st)?;
    d.check(&headers)?;
    Ok((StatusCode::OK, Json(json!({ "grants": d.grants() }))))
}

async fn put_grant(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> DemoResult {
    let d = demo(&st)?;
    d.check(&headers)?;
    let mut g = d.grants.lock().unwrap_or_else(|p| p.into_inner());
    let created = !g.contains_key(&id);
    let mut row = body;
    row["id"] = Value::String(id.clone());
    g.insert(id, row.clone());
    Ok((
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(row),
    ))
}

async fn delete_grant(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> DemoResult {
    let d = demo(&st)?;
    d.check(&headers)?;
    let removed = d
        .grants
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&id);
    match removed {
        Some(row) => Ok((StatusCode::OK, Json(row))),
        None => Err((
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("no grant `{id}`") })),
        )),
    }
}
