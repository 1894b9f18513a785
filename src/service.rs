//! The application core: turns what people ask for into domain actions, asks the approval
//! plugin, and persists transitions with compare-and-set retries. The JSON API, the web UI and
//! the job worker all go through here; none of them touches the store's writes directly.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngCore;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::config::{Config, Problems};
use crate::domain::{
    Action, Actor, Channel, DomainError, Event, Millis, NewRequest, PluginRef, PolicyOutcome,
    Principal, Request, Requirement, Review, State, Transition, Verdict, clean_comment,
};
use crate::metrics::Metrics;
use crate::plugin::{self, Decision, PluginHost};
use crate::policy::{Policy, Roles};
use crate::store::{RequestFilter, Store, StoreError, TokenRecord, TokenScope, WriteCtx};

/// The current time in milliseconds since the Unix epoch. The only clock read of the core.
pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

mod actions;
pub use actions::{ActionInput, ActionView};

/// How many times a write is retried after a compare-and-set conflict.
const CAS_ATTEMPTS: usize = 8;

/// Tokens are deleted this long after they expired or were revoked (the tokens page shows
/// them meanwhile; the audit log keeps their history for good).
pub const TOKEN_RETENTION_MS: Millis = 30 * 24 * 3600 * 1000;
/// Each replica prunes dead tokens at most this often, when it issues one.
const TOKEN_PRUNE_EVERY_MS: Millis = 3600 * 1000;

/// Why a service call failed. Nothing changed when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The domain refused the action.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// No such thing (or not visible to the caller).
    #[error("{0}")]
    NotFound(String),
    /// Not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// Bad input.
    #[error("{field}: {message}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Kept conflicting with concurrent writers.
    #[error("the request kept changing concurrently; try again")]
    Conflict,
    /// Not signed in, or the token is unusable.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller holds no active grant to mint credentials from.
    #[error("{0}")]
    NoActiveGrant(String),
    /// The connector hands out no credentials for this entitlement.
    #[error("{0}")]
    NoCredentials(String),
    /// The connector failed.
    #[error("{0}")]
    Connector(String),
    /// The database failed.
    #[error("storage failure: {0}")]
    Store(#[from] StoreError),
    /// Parameters presented with an attestation are not the ones approved.
    #[error("{0}")]
    DigestMismatch(String),
    /// Something Sallyport depends on did not answer (an issuer's keys, say).
    #[error("{0}")]
    Unavailable(String),
}

impl ServiceError {
    /// A stable code.
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::Domain(d) => d.code(),
            ServiceError::NotFound(_) => "not_found",
            ServiceError::Forbidden(_) => "forbidden",
            ServiceError::Invalid { .. } => "invalid_input",
            ServiceError::Conflict => "conflict",
            ServiceError::Unauthenticated(_) => "unauthenticated",
            ServiceError::NoActiveGrant(_) => "no_active_grant",
            ServiceError::NoCredentials(_) => "no_credentials",
            ServiceError::Connector(_) => "connector_failed",
            ServiceError::Store(_) => "internal",
            ServiceError::DigestMismatch(_) => "digest_mismatch",
            ServiceError::Unavailable(_) => "unavailable",
        }
    }
}

/// A signed-in caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who.
    pub principal: Principal,
    /// Their roles.
    pub roles: Roles,
    /// The token they used, when they used one.
    pub token_id: Option<String>,
}

impl Caller {
    fn actor(&self, channel: Channel) -> Actor {
        Actor {
            principal: self.principal.clone(),
            admin: self.roles.admin,
            channel,
        }
    }
}

/// What a requester asks for.
#[derive(Debug, Clone)]
pub struct CreateInput {
    /// Entitlement id.
    pub entitlement: String,
    /// Seconds; `None` for the default.
    pub duration_secs: Option<u64>,
    /// Why.
    pub justification: String,
    /// Ticket.
    pub ticket: Option<String>,
}

/// Which requests to list.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// `mine`: the caller's own; `review`: waiting for the caller's review; `all`: everything
    /// the caller may see (admins and auditors see all).
    pub scope: ListScope,
    /// Only these states.
    pub states: Vec<State>,
    /// Only this entitlement.
    pub entitlement: Option<String>,
    /// Only this requester (admins and auditors).
    pub requester: Option<String>,
    /// Page before this id.
    pub before: Option<String>,
    /// Page size.
    pub limit: u32,
}

/// See [`ListQuery::scope`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ListScope {
    /// The caller's own requests.
    #[default]
    Mine,
    /// Requests the caller may review now.
    Review,
    /// Everything visible.
    All,
}

struct Inner {
    workload: crate::workload::WorkloadVerifier,
    store: Arc<dyn Store>,
    policy: RwLock<Arc<Policy>>,
    host: PluginHost,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    /// When this replica last pruned dead tokens (ms; 0: not yet).
    tokens_pruned_at: AtomicI64,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// The application core. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

/// The plugin's view of a request.
pub fn plugin_request(r: &Request) -> plugin::AccessRequest {
    plugin::AccessRequest {
        id: r.id.clone(),
        entitlement: r.entitlement.clone(),
        requester: plugin_principal(&r.requester),
        duration_seconds: r.duration_secs,
        justification: r.justification.clone(),
        ticket: r.ticket.clone(),
        created_at: r.created_at,
    }
}

fn plugin_principal(p: &Principal) -> plugin::Principal {
    plugin::Principal {
        id: p.id.clone(),
        email: p.email.clone(),
        display_name: p.name.clone(),
        groups: p.groups.clone(),
    }
}

/// Identity of a plugin, for the domain.
pub fn plugin_ref(p: &plugin::PluginIdentity) -> PluginRef {
    PluginRef {
        name: p.name.clone(),
        version: p.version.clone(),
        sha256: p.sha256.clone(),
    }
}

impl Service {
    /// Assemble the core.
    pub fn new(
        store: Arc<dyn Store>,
        policy: Policy,
        host: PluginHost,
        metrics: Arc<Metrics>,
    ) -> Self {
        Service {
            inner: Arc::new(Inner {
                workload: crate::workload::WorkloadVerifier::new(),
                store,
                policy: RwLock::new(Arc::new(policy)),
                host,
                wake: Arc::new(Notify::new()),
                metrics,
                tokens_pruned_at: AtomicI64::new(0),
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The live policy.
    pub fn policy(&self) -> Arc<Policy> {
        self.inner
            .policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The plugin host.
    pub fn host(&self) -> &PluginHost {
        &self.inner.host
    }

    /// Metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// A person as known now: the static directory first, then their latest sign-in.
    pub async fn known_person(&self, id: &str) -> Result<Option<Principal>, StoreError> {
        match self.policy().directory_principal(id) {
            Some(p) => Ok(Some(p)),
            None => self.inner.store.find_person(id).await,
        }
    }

    /// The worker's wake-up signal (new jobs were enqueued).
    pub fn wake_handle(&self) -> Arc<Notify> {
        self.inner.wake.clone()
    }

    fn wake(&self, t: &Transition) {
        if !t.jobs.is_empty() {
            self.inner.wake.notify_one();
        }
    }

    /// Replace the policy with one built from `config`; on failure keep the current one.
    pub async fn reload(&self, config: Config) -> Result<(), Problems> {
        let policy = Policy::build(config, &self.inner.host).await?;
        *self.inner.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
        Ok(())
    }

    /// Ask the entitlement's approval plugin about a request. Failures deny (fail closed).
    pub async fn evaluate(
        &self,
        policy: &Policy,
        r: &Request,
        now: Millis,
    ) -> (PolicyOutcome, Option<PluginRef>) {
        let Some(ent) = policy.config.review_settings(r) else {
            let what = if r.action.is_some() {
                "action kind"
            } else {
                "entitlement"
            };
            return (
                PolicyOutcome::Error {
                    code: "entitlement_removed".into(),
                    message: format!("{what} `{}` is no longer configured", r.entitlement),
                },
                None,
            );
        };
        let Some(plugin) = policy.plugin(&ent.approval.plugin) else {
            return (
                PolicyOutcome::Error {
                    code: "plugin_missing".into(),
                    message: format!("approval plugin `{}` is not loaded", ent.approval.plugin),
                },
                None,
            );
        };
        let subject = match &r.action {
            Some(a) => plugin::Subject::Action(plugin::ActionRequest {
                id: r.id.clone(),
                kind: r.entitlement.clone(),
                requester: plugin_principal(&r.requester),
                parameters: crate::domain::canonical_text(&a.parameters),
                justification: r.justification.clone(),
                created_at: r.created_at,
            }),
            None => plugin::Subject::Access(plugin_request(r)),
        };
        let ctx = plugin::EvaluationContext {
            subject,
            settings: ent.approval.settings.clone(),
            reviews: r
                .reviews
                .iter()
                .map(|rv| plugin::Review {
                    reviewer: plugin_principal(&rv.reviewer),
                    verdict: match rv.verdict {
                        Verdict::Approve => plugin::Verdict::Approve,
                        Verdict::Deny => plugin::Verdict::Deny,
                    },
                    comment: rv.comment.clone(),
                    at: rv.at,
                    channel: match rv.channel {
                        Channel::Web => plugin::Channel::Web,
                        Channel::EmailLink | Channel::EmailLinkOnly => plugin::Channel::EmailLink,
                        Channel::Api | Channel::System => plugin::Channel::Api,
                    },
                })
                .collect(),
            now,
        };
        let identity = plugin_ref(plugin.identity());
        match plugin.evaluate(&ctx).await {
            Ok(ev) => {
                let outcome = match ev.decision {
                    Decision::Approve {
                        reason,
                        break_glass,
                    } => PolicyOutcome::Approve {
                        reason,
                        break_glass,
                    },
                    Decision::Deny { reason } => PolicyOutcome::Deny { reason },
                    Decision::Pending { requirements } => PolicyOutcome::Pending {
                        requirements: requirements
                            .into_iter()
                            .map(|r| Requirement {
                                name: r.name,
                                users: r.users,
                                groups: r.groups,
                                needed: r.needed,
                                approved_by: r.approved_by,
                            })
                            .collect(),
                    },
                };
                (outcome, Some(identity))
            }
            Err(e) => {
                self.inner.metrics.plugin_error(e.code());
                tracing::warn!(plugin = %identity.name, error = %e, "approval plugin failed; denying");
                (
                    PolicyOutcome::Error {
                        code: e.code().into(),
                        message: e.to_string(),
                    },
                    Some(identity),
                )
            }
        }
    }

    /// File a request; the approval plugin decides at once whether it is approved, denied or
    /// pending.
    pub async fn create_request(
        &self,
        caller: &Caller,
        input: CreateInput,
        channel: Channel,
        ctx: &WriteCtx,
    ) -> Result<Request, ServiceError> {
        let policy = self.policy();
        let ent = policy.entitlement(&input.entitlement).ok_or_else(|| {
            ServiceError::NotFound(format!(
                "no entitlement `{}`; `sallyport entitlements` lists them",
                input.entitlement
            ))
        })?;
        let now = now_ms();
        let id = uuid::Uuid::now_v7().to_string();
        let created = Request::create(
            id,
            NewRequest {
                requester: caller.principal.clone(),
                duration_secs: input.duration_secs,
                justification: input.justification,
                ticket: input.ticket,
                channel,
            },
            &ent.rules,
            now,
        )?;
        self.file(&policy, created, now, ctx).await
    }

    /// Ask the approval plugin about a request just created, and insert it with its events and
    /// jobs: access and action requests alike.
    async fn file(
        &self,
        policy: &Policy,
        created: Transition,
        now: Millis,
        ctx: &WriteCtx,
    ) -> Result<Request, ServiceError> {
        let (outcome, plugin) = self.evaluate(policy, &created.request, now).await;
        let evaluated = created
            .request
            .apply(Action::Evaluated { outcome, plugin }, now)?;
        let mut t = created.then(evaluated);
        if t.request.state != State::Pending {
            // Decided at once: nothing can time out.
            t.jobs.retain(|j| j.kind != crate::domain::JobKind::Timeout);
        }
        self.inner.store.insert_request(&t, ctx).await?;
        self.inner.metrics.transitions(&t);
        self.wake(&t);
        let mut r = t.request;
        r.version = 1;
        Ok(r)
    }

    /// Persist a transition with compare-and-set on the request's version: the request as
    /// stored, or `None` when another writer came first (the caller reloads and retries).
    async fn commit(&self, t: Transition, ctx: &WriteCtx) -> Result<Option<Request>, ServiceError> {
        match self.inner.store.commit(&t, ctx, None).await {
            Ok(()) => {
                self.inner.metrics.transitions(&t);
                self.wake(&t);
                let mut out = t.request;
                out.version += 1;
                Ok(Some(out))
            }
            Err(StoreError::Conflict) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// What the approval policy would answer to this request now, without filing it: who must
    /// approve, or that it would be approved or denied at once. Validates like
    /// [`Service::create_request`].
    pub async fn preview(
        &self,
        caller: &Caller,
        input: CreateInput,
    ) -> Result<PolicyOutcome, ServiceError> {
        let policy = self.policy();
        let ent = policy.entitlement(&input.entitlement).ok_or_else(|| {
            ServiceError::NotFound(format!("no entitlement `{}`", input.entitlement))
        })?;
        let now = now_ms();
        let created = Request::create(
            format!("preview-{}", uuid::Uuid::now_v7()),
            NewRequest {
                requester: caller.principal.clone(),
                duration_secs: input.duration_secs,
                justification: input.justification,
                ticket: input.ticket,
                channel: Channel::Web,
            },
            &ent.rules,
            now,
        )?;
        Ok(self.evaluate(&policy, &created.request, now).await.0)
    }

    /// Load a request the caller may see.
    pub async fn get(&self, caller: &Caller, id: &str) -> Result<Request, ServiceError> {
        let r = self
            .inner
            .store
            .get_request(id)
            .await?
            .filter(|r| can_view(caller, r))
            .ok_or_else(|| ServiceError::NotFound(format!("no request `{id}`")))?;
        Ok(r)
    }

    /// Apply an action chosen by `decide` from the freshly loaded request, retrying on
    /// compare-and-set conflicts.
    async fn act(
        &self,
        caller: &Caller,
        id: &str,
        ctx: &WriteCtx,
        decide: impl Fn(&Request) -> Result<Action, ServiceError> + Send + Sync,
    ) -> Result<Request, ServiceError> {
        for _ in 0..CAS_ATTEMPTS {
            let r = self.get(caller, id).await?;
            let now = now_ms();
            let action = decide(&r)?;
            let t = r.apply(action, now)?;
            if let Some(out) = self.commit(t, ctx).await? {
                return Ok(out);
            }
        }
        Err(ServiceError::Conflict)
    }

    /// Approve or deny. The approval plugin is asked again in the same commit.
    pub async fn review(
        &self,
        caller: &Caller,
        id: &str,
        verdict: Verdict,
        comment: Option<String>,
        channel: Channel,
        ctx: &WriteCtx,
    ) -> Result<Request, ServiceError> {
        let comment = clean_comment(comment.as_deref())?;
        let policy = self.policy();
        for _ in 0..CAS_ATTEMPTS {
            let r = self.get(caller, id).await?;
            let now = now_ms();
            let review = Review {
                reviewer: caller.principal.clone(),
                verdict,
                comment: comment.clone(),
                channel,
                at: now,
            };
            let reviewed = match r.apply(Action::Review(review), now) {
                Ok(t) => t,
                Err(e @ (DomainError::SelfReview { .. } | DomainError::NotEligible { .. })) => {
                    self.audit_refusal(caller, &r, &e, channel, now, ctx)
                        .await?;
                    return Err(e.into());
                }
                Err(e) => return Err(e.into()),
            };
            let (outcome, plugin) = self.evaluate(&policy, &reviewed.request, now).await;
            let evaluated = reviewed
                .request
                .apply(Action::Evaluated { outcome, plugin }, now)?;
            let t = reviewed.then(evaluated);
            if let Some(out) = self.commit(t, ctx).await? {
                return Ok(out);
            }
        }
        Err(ServiceError::Conflict)
    }

    async fn audit_refusal(
        &self,
        caller: &Caller,
        r: &Request,
        e: &DomainError,
        channel: Channel,
        now: Millis,
        ctx: &WriteCtx,
    ) -> Result<(), ServiceError> {
        tracing::warn!(request = %r.id, reviewer = %caller.principal.id, code = e.code(), "review refused");
        let event = Event {
            at: now,
            actor: caller.principal.actor(),
            action: "review.refused".into(),
            subject: r.id.clone(),
            before: json!({ "state": r.state }),
            after: json!({ "state": r.state, "code": e.code(), "reason": e.to_string() }),
            channel,
            plugin: None,
        };
        self.inner.store.append_events(&[event], ctx).await?;
        Ok(())
    }

    /// Withdraw a pending request.
    pub async fn cancel(
        &self,
        caller: &Caller,
        id: &str,
        channel: Channel,
        ctx: &WriteCtx,
    ) -> Result<Request, ServiceError> {
        let actor = caller.actor(channel);
        self.act(caller, id, ctx, move |_| Ok(Action::Cancel(actor.clone())))
            .await
    }

    /// Revoke an approved or active request.
    pub async fn revoke(
        &self,
        caller: &Caller,
        id: &str,
        reason: String,
        channel: Channel,
        ctx: &WriteCtx,
    ) -> Result<Request, ServiceError> {
        let actor = caller.actor(channel);
        self.act(caller, id, ctx, move |_| {
            Ok(Action::Revoke {
                by: actor.clone(),
                reason: reason.clone(),
            })
        })
        .await
    }

    /// End one's own active grant early.
    pub async fn end(
        &self,
        caller: &Caller,
        id: &str,
        channel: Channel,
        ctx: &WriteCtx,
    ) -> Result<Request, ServiceError> {
        let actor = caller.actor(channel);
        self.act(caller, id, ctx, move |_| Ok(Action::End(actor.clone())))
            .await
    }

    /// List requests.
    pub async fn list(&self, caller: &Caller, q: &ListQuery) -> Result<Vec<Request>, ServiceError> {
        let privileged = caller.roles.admin || caller.roles.auditor;
        let limit = q.limit.clamp(1, 500);
        let mut filter = RequestFilter {
            states: q.states.clone(),
            requester: None,
            entitlement: q.entitlement.clone(),
            before: q.before.clone(),
            limit,
        };
        match q.scope {
            ListScope::Mine => filter.requester = Some(caller.principal.id.clone()),
            ListScope::Review => {
                filter.states = vec![State::Pending];
                filter.limit = 500;
            }
            ListScope::All => {
                if privileged {
                    filter.requester = q.requester.clone();
                } else {
                    filter.limit = 500;
                }
            }
        }
        let rows = self.inner.store.list_requests(&filter).await?;
        let out: Vec<Request> = rows
            .into_iter()
            .filter(|r| match q.scope {
                ListScope::Mine => true,
                ListScope::Review => {
                    r.may_review(&caller.principal) && r.requester.id != caller.principal.id
                }
                ListScope::All => {
                    can_view(caller, r) && q.requester.as_ref().is_none_or(|u| r.requester.id == *u)
                }
            })
            .take(limit as usize)
            .collect();
        Ok(out)
    }

    /// Issue an API token for a principal. Returns the secret (shown once) and its record.
    pub async fn issue_token(
        &self,
        principal: &Principal,
        name: &str,
        ttl_secs: u64,
        channel: Channel,
        ctx: &WriteCtx,
    ) -> Result<(String, TokenRecord), ServiceError> {
        self.issue_scoped_token(principal, name, ttl_secs, TokenScope::Api, channel, ctx)
            .await
    }

    /// Issue a token that works only in `scope` (API bearer or browser session).
    pub async fn issue_scoped_token(
        &self,
        principal: &Principal,
        name: &str,
        ttl_secs: u64,
        scope: TokenScope,
        channel: Channel,
        ctx: &WriteCtx,
    ) -> Result<(String, TokenRecord), ServiceError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
            return Err(ServiceError::Invalid {
                field: "name".into(),
                message: "1 to 100 printable characters".into(),
            });
        }
        let now = now_ms();
        let mut id_bytes = [0u8; 8];
        rand::rng().fill_bytes(&mut id_bytes);
        let id = hex::encode(id_bytes);
        let token = format!("spt_{id}_{}", crate::secret::random_b64());
        let record = TokenRecord {
            id: id.clone(),
            user_id: principal.id.clone(),
            principal: principal.clone(),
            name: name.to_owned(),
            scope,
            created_at: now,
            expires_at: now.saturating_add(crate::domain::secs_to_ms(ttl_secs)),
            last_used_at: None,
            revoked_at: None,
        };
        self.inner
            .store
            .insert_token(&record, &token_hash(&token))
            .await?;
        self.prune_tokens(now).await;
        let event = Event {
            at: now,
            actor: principal.actor(),
            action: match scope {
                TokenScope::Api => "token.issued".into(),
                TokenScope::Web => "session.started".into(),
                TokenScope::Action => "token.issued_for_action".into(),
            },
            subject: format!("token:{id}"),
            before: serde_json::Value::Null,
            after: json!({ "name": record.name, "scope": scope, "expires_at": record.expires_at }),
            channel,
            plugin: None,
        };
        self.inner.store.append_events(&[event], ctx).await?;
        Ok((token, record))
    }

    /// Delete tokens dead for longer than [`TOKEN_RETENTION_MS`], at most once an hour per
    /// replica (the first time at the first token issued). A failure is logged and retried
    /// next time: it never stops anyone from signing in.
    async fn prune_tokens(&self, now: Millis) {
        let last = self.inner.tokens_pruned_at.load(Ordering::Relaxed);
        if now.saturating_sub(last) < TOKEN_PRUNE_EVERY_MS
            || self
                .inner
                .tokens_pruned_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        match self
            .inner
            .store
            .prune_tokens(now.saturating_sub(TOKEN_RETENTION_MS))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "pruned expired and revoked tokens"),
            Err(e) => {
                tracing::warn!(error = %e, "pruning old tokens failed; trying again later");
                self.inner.tokens_pruned_at.store(last, Ordering::Relaxed);
            }
        }
    }

    /// Resolve a bearer token to a caller.
    pub async fn authenticate(&self, token: &str) -> Result<Caller, ServiceError> {
        self.authenticate_scoped(token, TokenScope::Api).await
    }

    /// Resolve a token of the given scope to a caller: a session cookie is no bearer token and
    /// a bearer token opens no browser session.
    pub async fn authenticate_scoped(
        &self,
        token: &str,
        scope: TokenScope,
    ) -> Result<Caller, ServiceError> {
        let rec = self.live_token(token, scope).await?.ok_or_else(|| {
            ServiceError::Unauthenticated(
                "invalid or expired token; sign in again (`sallyport login`)".into(),
            )
        })?;
        let now = now_ms();
        let policy = self.policy();
        // Directory users get their current groups; others keep what they had at sign-in.
        let principal = policy
            .directory_principal(&rec.user_id)
            .unwrap_or_else(|| rec.principal.clone());
        let roles = policy.roles(&principal);
        if rec.last_used_at.is_none_or(|t| now - t > 60_000)
            && let Err(e) = self.inner.store.touch_token(&rec.id, now).await
        {
            tracing::warn!(error = %e, "could not record token use");
        }
        Ok(Caller {
            principal,
            roles,
            token_id: Some(rec.id),
        })
    }

    /// The record of a token of `scope` that is well-formed, known, unrevoked and unexpired.
    async fn live_token(
        &self,
        token: &str,
        scope: TokenScope,
    ) -> Result<Option<TokenRecord>, ServiceError> {
        if !token.starts_with("spt_") || token.len() > 200 {
            return Ok(None);
        }
        Ok(self
            .inner
            .store
            .find_token(&token_hash(token))
            .await?
            .filter(|rec| {
                rec.revoked_at.is_none() && now_ms() < rec.expires_at && rec.scope == scope
            }))
    }

    /// Revoke a token of the caller's (admins: anyone's).
    pub async fn revoke_token(
        &self,
        caller: &Caller,
        id: &str,
        ctx: &WriteCtx,
    ) -> Result<(), ServiceError> {
        let user = if caller.roles.admin {
            None
        } else {
            Some(caller.principal.id.as_str())
        };
        let now = now_ms();
        if !self.inner.store.revoke_token(id, user, now).await? {
            return Err(ServiceError::NotFound(format!("no active token `{id}`")));
        }
        let event = Event {
            at: now,
            actor: caller.principal.actor(),
            action: "token.revoked".into(),
            subject: format!("token:{id}"),
            before: serde_json::Value::Null,
            after: json!({}),
            channel: Channel::Api,
            plugin: None,
        };
        self.inner.store.append_events(&[event], ctx).await?;
        Ok(())
    }
}

/// Whose credentials: the caller's active grant of an entitlement, or one request.
#[derive(Debug, Clone)]
pub enum CredentialsFor {
    /// The caller's (latest) active grant of this entitlement.
    Entitlement(String),
    /// This request (the caller's own).
    Request(String),
}

impl Service {
    /// Mint credentials for the caller's active grant. They are returned once and never stored;
    /// the audit log records who minted which key and until when.
    pub async fn credentials(
        &self,
        caller: &Caller,
        target: CredentialsFor,
        ctx: &WriteCtx,
    ) -> Result<(Request, plugin::Credentials), ServiceError> {
        let now = now_ms();
        let r = match &target {
            CredentialsFor::Request(id) => {
                let r = self.get(caller, id).await?;
                if r.requester.id != caller.principal.id {
                    return Err(ServiceError::Forbidden(
                        "only the holder of a grant can mint its credentials".into(),
                    ));
                }
                if !r.is_active_at(now) {
                    return Err(ServiceError::NoActiveGrant(format!(
                        "request {id} is {}, not active: it gives no credentials",
                        r.state
                    )));
                }
                r
            }
            CredentialsFor::Entitlement(ent) => {
                let policy = self.policy();
                if policy.entitlement(ent).is_none() {
                    return Err(ServiceError::NotFound(format!("no entitlement `{ent}`")));
                }
                let list = self
                    .inner
                    .store
                    .list_requests(&RequestFilter {
                        states: vec![State::Active],
                        requester: Some(caller.principal.id.clone()),
                        entitlement: Some(ent.clone()),
                        before: None,
                        limit: 20,
                    })
                    .await?;
                list.into_iter()
                    .filter(|r| r.is_active_at(now))
                    .max_by_key(|r| r.grant.as_ref().map_or(0, |g| g.expires_at))
                    .ok_or_else(|| {
                        ServiceError::NoActiveGrant(format!(
                            "you have no active grant of `{ent}`; request it with `sallyport request {ent} --reason TEXT --wait` (or `sallyport creds {ent} --request --reason TEXT`)"
                        ))
                    })?
            }
        };
        let Some(grant) = r.grant.clone() else {
            return Err(ServiceError::NoActiveGrant(
                "the request holds no grant".into(),
            ));
        };
        let policy = self.policy();
        let ent = policy.entitlement(&r.entitlement).ok_or_else(|| {
            ServiceError::NotFound(format!(
                "entitlement `{}` is no longer configured",
                r.entitlement
            ))
        })?;
        let plugin = policy.plugin(&ent.connector.plugin).ok_or_else(|| {
            ServiceError::Connector(format!(
                "connector plugin `{}` is not loaded",
                ent.connector.plugin
            ))
        })?;
        let req = plugin::CredentialsRequest {
            request: plugin_request(&r),
            settings: ent.connector.settings.clone(),
            handle: grant.handle.to_string(),
            expires_at: grant.expires_at,
            now,
        };
        let creds = plugin.credentials(&req).await.map_err(|f| match f {
            plugin::ConnectorFailure::Connector {
                error: plugin::ConnectorError::Unsupported(m),
                ..
            } => ServiceError::NoCredentials(format!(
                "`{}` hands out no credentials: {m}",
                r.entitlement
            )),
            other => {
                if let plugin::ConnectorFailure::Plugin(pe) = &other {
                    self.inner.metrics.plugin_error(pe.code());
                }
                ServiceError::Connector(format!("minting credentials failed: {other}"))
            }
        })?;
        let (kind, key, expiration) = match &creds.0 {
            plugin::CredentialSet::Aws(c) => ("aws", Some(c.access_key_id.clone()), c.expiration),
            plugin::CredentialSet::Generic(g) => ("generic", None, g.expiration),
        };
        let event = Event {
            at: now,
            actor: caller.principal.actor(),
            action: "credentials.issued".into(),
            subject: r.id.clone(),
            before: json!({ "state": r.state }),
            after: json!({ "state": r.state, "kind": kind, "access_key_id": key, "expiration": expiration }),
            channel: Channel::Api,
            plugin: Some(plugin_ref(plugin.identity())),
        };
        self.inner.store.append_events(&[event], ctx).await?;
        Ok((r, creds))
    }
}

/// How long a CLI login code lives between the browser and the CLI.
pub const CLI_CODE_TTL_MS: Millis = 2 * 60 * 1000;

impl Service {
    /// A one-time code for the CLI's browser login, bound to the signed-in user and the CLI's
    /// PKCE challenge (S256). Stored hashed; single use; two minutes.
    pub async fn issue_cli_code(
        &self,
        caller: &Caller,
        challenge: &str,
    ) -> Result<String, ServiceError> {
        let code = crate::secret::random_b64();
        self.inner
            .store
            .put_one_time(
                &token_hash(&code),
                "cli-code",
                &json!({ "principal": caller.principal, "challenge": challenge }),
                now_ms() + CLI_CODE_TTL_MS,
            )
            .await?;
        Ok(code)
    }

    /// Exchange a CLI login code and its PKCE verifier for an API token. A code works once,
    /// and a wrong verifier uses it up.
    pub async fn exchange_cli_code(
        &self,
        code: &str,
        verifier: &str,
        name: &str,
        ctx: &WriteCtx,
    ) -> Result<(String, TokenRecord), ServiceError> {
        let bad = || {
            ServiceError::Unauthenticated(
                "the login code is unknown, used or expired, or the verifier does not match; run `sallyport login` again".into(),
            )
        };
        if code.len() > 100 || !(43..=128).contains(&verifier.len()) {
            return Err(bad());
        }
        let kept = self
            .inner
            .store
            .take_one_time(&token_hash(code), "cli-code", now_ms())
            .await?
            .ok_or_else(bad)?;
        let expected = kept["challenge"].as_str().unwrap_or_default();
        if !crate::secret::same(&crate::secret::pkce_challenge(verifier), expected) {
            return Err(bad());
        }
        let principal: Principal =
            serde_json::from_value(kept["principal"].clone()).map_err(|_| bad())?;
        // Directory users get their current groups at every use anyway.
        let ttl = self.policy().config.auth.token_ttl_secs;
        self.issue_token(&principal, name, ttl, Channel::Api, ctx)
            .await
    }
}

/// SHA-256 of a token, hex: what the store keeps.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Who may see a request: its requester, anyone who reviewed it or may review it, admins and
/// auditors.
pub fn can_view(caller: &Caller, r: &Request) -> bool {
    let p = &caller.principal;
    caller.roles.admin
        || caller.roles.auditor
        || r.requester.id == p.id
        || r.reviews.iter().any(|rv| rv.reviewer.id == p.id)
        || r.requirements.iter().any(|q| q.admits(p))
}
