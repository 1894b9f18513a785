//! Persistence: the only module that speaks SQL.
//!
//! [`Store`] is the one interface the rest of Sallyport uses. [`sql::SqlStore`] implements it for
//! both databases with the same SQL; the dialect differences (connection set-up, how a write
//! transaction begins, row locks for job claims and the audit head) live in [`sqlite`] and
//! [`postgres`]. Every state change is written together with its audit events and its jobs in
//! one transaction, with compare-and-set on the request's version.

mod postgres;
mod sql;
mod sqlite;

use async_trait::async_trait;
use serde::Serialize;

use crate::audit::{AuditRecord, VerifyReport};
use crate::domain::{Event, JobKind, Millis, Principal, Request, State, Transition};

pub use sql::SqlStore;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone else changed the request first (compare-and-set failed): reload and retry.
    #[error("the request changed concurrently; retry")]
    Conflict,
    /// The row does not exist.
    #[error("not found")]
    NotFound,
    /// A stored value could not be decoded.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Which database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Embedded SQLite (WAL).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// Context of a write: which HTTP request caused it (for the audit log).
#[derive(Debug, Clone, Default)]
pub struct WriteCtx {
    /// The correlation id of the HTTP request, if any.
    pub request_id: Option<String>,
}

/// A claimed job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Row id.
    pub id: i64,
    /// What to do.
    pub kind: JobKind,
    /// For which request.
    pub request_id: String,
    /// When it was due.
    pub run_at: Millis,
    /// Failed attempts before this one.
    pub attempts: u32,
    /// Re-enqueue counter: completing an older generation leaves a newer one queued.
    pub generation: i64,
}

/// Filters for listing requests. Results are newest first.
#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    /// Only these states.
    pub states: Vec<State>,
    /// Only this requester.
    pub requester: Option<String>,
    /// Only this entitlement.
    pub entitlement: Option<String>,
    /// Only ids before this one (paging).
    pub before: Option<String>,
    /// At most this many (capped at 500).
    pub limit: u32,
}

/// Filters for the audit log. Results are in chain order.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Events at or after this time.
    pub since: Option<Millis>,
    /// Events before this time.
    pub until: Option<Millis>,
    /// Only this subject.
    pub subject: Option<String>,
    /// Only this actor (`user:alice`).
    pub actor: Option<String>,
    /// Only this action, or a prefix ending in `.` (`request.`).
    pub action: Option<String>,
    /// Events after this sequence number (paging).
    pub after_seq: Option<i64>,
    /// At most this many (capped at 10,000).
    pub limit: u32,
}

/// A stored API token (never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRecord {
    /// Public id (`spt_<id>_...` prefix of the token).
    pub id: String,
    /// The user it acts for.
    pub user_id: String,
    /// Their identity when it was issued.
    pub principal: Principal,
    /// A label (`cli`, `ci deploy`).
    pub name: String,
    /// Where it works: `api` (bearer) or `web` (session cookie).
    pub scope: TokenScope,
    /// Issued.
    pub created_at: Millis,
    /// Stops working.
    pub expires_at: Millis,
    /// Last used (updated at most once a minute).
    pub last_used_at: Option<Millis>,
    /// Revoked.
    pub revoked_at: Option<Millis>,
}

/// Where a token works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenScope {
    /// `Authorization: Bearer` on the API (CLI, automation).
    Api,
    /// A browser session, in the session cookie.
    Web,
}

impl TokenScope {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenScope::Api => "api",
            TokenScope::Web => "web",
        }
    }
}

/// Counts for the metrics endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests per state.
    pub requests: Vec<(State, i64)>,
    /// Jobs queued per kind.
    pub jobs: Vec<(JobKind, i64)>,
    /// Revocations still pending.
    pub revocations_pending: i64,
    /// Audit events.
    pub audit_events: i64,
}

/// The persistence interface.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Which database this is.
    fn backend(&self) -> Backend;

    /// Is the database reachable?
    async fn ping(&self) -> Result<(), StoreError>;

    /// Insert a new request (version 0 becomes 1) with its events and jobs.
    async fn insert_request(&self, t: &Transition, ctx: &WriteCtx) -> Result<(), StoreError>;

    /// Persist a transition of a stored request if its version is still `t.request.version`
    /// (then it becomes version + 1), with its events and jobs; optionally complete the job
    /// that caused it. [`StoreError::Conflict`] when the version moved.
    async fn commit(
        &self,
        t: &Transition,
        ctx: &WriteCtx,
        done: Option<&Job>,
    ) -> Result<(), StoreError>;

    /// Load a request.
    async fn get_request(&self, id: &str) -> Result<Option<Request>, StoreError>;

    /// List requests, newest first.
    async fn list_requests(&self, filter: &RequestFilter) -> Result<Vec<Request>, StoreError>;

    /// Append events that change no request (a refused review, a token issued).
    async fn append_events(&self, events: &[Event], ctx: &WriteCtx) -> Result<(), StoreError>;

    /// Query the audit log.
    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError>;

    /// Walk the whole chain and check it.
    async fn verify_audit(&self) -> Result<VerifyReport, StoreError>;

    /// Claim up to `limit` due jobs for `lease_ms`.
    async fn claim_jobs(
        &self,
        worker: &str,
        now: Millis,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError>;

    /// Keep holding claimed jobs.
    async fn extend_lease(
        &self,
        worker: &str,
        ids: &[i64],
        until: Millis,
    ) -> Result<(), StoreError>;

    /// The job is done (nothing to persist with it).
    async fn complete_job(&self, job: &Job) -> Result<(), StoreError>;

    /// The job failed; run it again at `run_at`.
    async fn retry_job(&self, job: &Job, run_at: Millis, error: &str) -> Result<(), StoreError>;

    /// When the next job is due (unclaimed or with an expired lease).
    async fn next_due(&self) -> Result<Option<Millis>, StoreError>;

    /// Store a new API token.
    async fn insert_token(&self, token: &TokenRecord, hash: &str) -> Result<(), StoreError>;

    /// Find a token by the SHA-256 of its secret.
    async fn find_token(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError>;

    /// Note a token's use.
    async fn touch_token(&self, id: &str, now: Millis) -> Result<(), StoreError>;

    /// Revoke a token (of this user, unless `user` is `None`). False when there was none.
    async fn revoke_token(
        &self,
        id: &str,
        user: Option<&str>,
        now: Millis,
    ) -> Result<bool, StoreError>;

    /// A user's tokens.
    async fn list_tokens(&self, user: &str) -> Result<Vec<TokenRecord>, StoreError>;

    /// Keep a single-use secret (by its hash) for `purpose` until `expires_at`; also drops
    /// expired ones.
    async fn put_one_time(
        &self,
        hash: &str,
        purpose: &str,
        data: &serde_json::Value,
        expires_at: Millis,
    ) -> Result<(), StoreError>;

    /// Take (and delete) a single-use secret that is for `purpose` and not expired at `now`.
    async fn take_one_time(
        &self,
        hash: &str,
        purpose: &str,
        now: Millis,
    ) -> Result<Option<serde_json::Value>, StoreError>;

    /// Counts for metrics.
    async fn counts(&self) -> Result<Counts, StoreError>;
}

/// Connect to `url` (`sqlite://PATH` or `postgres://...`) and run migrations.
pub async fn connect(url: &str, max_connections: u32) -> Result<SqlStore, StoreError> {
    SqlStore::connect(url, max_connections).await
}
