//! Persistence: the only module that speaks SQL.
//!
//! [`Store`] is the one interface the rest of Sallyport uses. [`sql::SqlStore`] implements it for
//! both databases with the same SQL; the dialect differences (connection set-up, how a write
//! transaction begins, row locks for job claims and the audit head) live in `store/sqlite.rs` and
//! `store/postgres.rs`. Every state change is written together with its audit events and its jobs in
//! one transaction, with compare-and-set on the request's version.

mod notify;
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

/// Filters for the audit log. Results are in chain order, or newest first when
/// `newest_first` is set.
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
    /// Only events about requests for this entitlement.
    pub entitlement: Option<String>,
    /// Events after this sequence number (paging).
    pub after_seq: Option<i64>,
    /// The newest events (highest sequence numbers) first, rather than chain order: the
    /// latest `limit` events, not the oldest.
    pub newest_first: bool,
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
    /// A pipeline's wait token: reads the one action request named by the token's name.
    Action,
}

impl TokenScope {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenScope::Api => "api",
            TokenScope::Web => "web",
            TokenScope::Action => "action",
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
pub trait Store: NotifyStore + Send + Sync + std::fmt::Debug {
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

    /// A user's newest `limit` tokens (capped at 1,000), newest first.
    async fn list_tokens(&self, user: &str, limit: u32) -> Result<Vec<TokenRecord>, StoreError>;

    /// Delete tokens that expired, or were revoked, before `before`; how many went. They can
    /// never work again, and their history stays in the audit log.
    async fn prune_tokens(&self, before: Millis) -> Result<u64, StoreError>;

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

    /// Record that `kid` (public key `jwk`) signed a token valid until `not_after`: it stays
    /// published at least that long.
    async fn note_attestation_key(
        &self,
        kid: &str,
        jwk: &serde_json::Value,
        not_after: Millis,
    ) -> Result<(), StoreError>;

    /// Public keys that signed tokens still valid at `now`.
    async fn attestation_keys(
        &self,
        now: Millis,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError>;

    /// Counts for metrics.
    async fn counts(&self) -> Result<Counts, StoreError>;
}

/// The notification tables (see `crate::notify`): people seen, the delivery outbox, approval
/// links, the dev-mode outbox. A part of every [`Store`].
#[async_trait]
pub trait NotifyStore: Send + Sync {
    /// Remember a person who signed in (their groups as of now), for reviewer-group mail.
    async fn remember_person(&self, p: &Principal, now: Millis) -> Result<(), StoreError>;

    /// Everyone who has signed in.
    async fn people(&self) -> Result<Vec<Principal>, StoreError>;

    /// A person who signed in, by id.
    async fn find_person(&self, id: &str) -> Result<Option<Principal>, StoreError>;

    /// The audit sequence number a notification cursor has reached (`*`: the notifier's).
    async fn notify_cursor(&self, cursor: &str) -> Result<i64, StoreError>;

    /// Queue deliveries (ignoring keys already queued) and move `cursor` forward to `seq`, in
    /// one transaction.
    async fn add_deliveries(
        &self,
        cursor: &str,
        seq: i64,
        deliveries: &[NewDelivery],
        now: Millis,
    ) -> Result<(), StoreError>;

    /// Claim due deliveries for `lease_ms`.
    async fn claim_deliveries(
        &self,
        worker: &str,
        now: Millis,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError>;

    /// Record a delivery's end: `sent`, `skipped` (no longer relevant) or `dead` (gave up).
    /// Only the worker holding its claim can (a lapsed claim taken over by another is theirs).
    async fn finish_delivery(
        &self,
        id: i64,
        worker: &str,
        state: DeliveryState,
        note: Option<&str>,
        now: Millis,
    ) -> Result<(), StoreError>;

    /// Try a delivery again at `run_at` (only the worker holding its claim).
    async fn retry_delivery(
        &self,
        id: i64,
        worker: &str,
        run_at: Millis,
        error: &str,
    ) -> Result<(), StoreError>;

    /// When the next queued delivery is due.
    async fn next_delivery_due(&self) -> Result<Option<Millis>, StoreError>;

    /// A request's deliveries, oldest first.
    async fn deliveries_for(&self, request_id: &str) -> Result<Vec<Delivery>, StoreError>;

    /// Store approval links (by the hashes of their tokens).
    async fn insert_links(&self, links: &[ApprovalLink]) -> Result<(), StoreError>;

    /// Forget approval links that were never sent.
    async fn delete_links(&self, hashes: &[String]) -> Result<(), StoreError>;

    /// An approval link by the hash of its token.
    async fn find_link(&self, hash: &str) -> Result<Option<ApprovalLink>, StoreError>;

    /// Use a link: of two concurrent users exactly one succeeds, and only while it is unused and
    /// unexpired at `now`. Its sibling links (same request and reviewer) are used up with it.
    async fn use_link(&self, hash: &str, now: Millis) -> Result<bool, StoreError>;

    /// Keep a message in the dev-mode outbox.
    async fn put_outbox(&self, m: &OutboxMessage) -> Result<(), StoreError>;

    /// The dev-mode outbox, newest first.
    async fn outbox(&self, limit: u32) -> Result<Vec<OutboxMessage>, StoreError>;

    /// One message of the dev-mode outbox.
    async fn outbox_message(&self, id: i64) -> Result<Option<OutboxMessage>, StoreError>;
}

/// A notification to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// Makes queuing idempotent (`request/topic/channel/target[/seq]`).
    pub key: String,
    /// The request it is about.
    pub request_id: String,
    /// What happened (`review_needed`, `approved`...).
    pub topic: String,
    /// `email` or `webhook`.
    pub channel: String,
    /// A user id or address (email), or a webhook's name.
    pub target: String,
    /// The audit event it comes from.
    pub event_seq: i64,
    /// Not before.
    pub run_at: Millis,
}

/// A queued notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Row id.
    pub id: i64,
    /// See [`NewDelivery`].
    pub request_id: String,
    /// See [`NewDelivery`].
    pub topic: String,
    /// See [`NewDelivery`].
    pub channel: String,
    /// See [`NewDelivery`].
    pub target: String,
    /// See [`NewDelivery`].
    pub event_seq: i64,
    /// When it is (was) due.
    pub run_at: Millis,
    /// Failed attempts so far.
    pub attempts: u32,
    /// The last failure.
    pub last_error: Option<String>,
    /// `queued`, `sent`, `skipped` or `dead`.
    pub state: String,
}

/// How a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Handed to the mail server or webhook.
    Sent,
    /// No longer relevant (the request moved on).
    Skipped,
    /// Given up after too many attempts.
    Dead,
}

impl DeliveryState {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Sent => "sent",
            DeliveryState::Skipped => "skipped",
            DeliveryState::Dead => "dead",
        }
    }
}

/// An approval link (never the token itself: its SHA-256).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalLink {
    /// SHA-256 of the token, hex.
    pub hash: String,
    /// The request.
    pub request_id: String,
    /// The reviewer it was sent to.
    pub reviewer: String,
    /// The reviewer as known when it was sent (acts for them with link-only approval).
    pub principal: Principal,
    /// `approve` or `deny`.
    pub action: String,
    /// Sent.
    pub created_at: Millis,
    /// Stops working (when the request would time out).
    pub expires_at: Millis,
    /// Used.
    pub used_at: Option<Millis>,
}

/// A message in the dev-mode outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// Row id (0 before it is stored).
    pub id: i64,
    /// To whom.
    pub recipient: String,
    /// Subject.
    pub subject: String,
    /// Plain-text body.
    pub text_body: String,
    /// HTML body.
    pub html_body: String,
    /// The request it is about.
    pub request_id: String,
    /// When.
    pub created_at: Millis,
}

/// Connect to `url` (`sqlite://PATH` or `postgres://...`) and run migrations.
pub async fn connect(url: &str, max_connections: u32) -> Result<SqlStore, StoreError> {
    SqlStore::connect(url, max_connections).await
}
