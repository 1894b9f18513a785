//! The durable job queue's worker: provision, revoke, expire and time out.
//!
//! Jobs live in the database, written in the same transaction as the state change that causes
//! them. The worker claims due jobs for a lease (renewed while they run; on PostgreSQL with
//! `FOR UPDATE SKIP LOCKED`, so replicas share the queue), runs them with bounded concurrency,
//! and sleeps until the next job is due or a new one is enqueued, never longer than
//! [`MAX_SLEEP`]. Overdue jobs (after a restart) are simply due. Every job is idempotent: it
//! reloads the request and does nothing if the request has moved on.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::domain::{Action, DomainError, JobKind, Request, RevokeReason, State};
use crate::plugin::{self, ConnectorFailure};
use crate::service::{Service, now_ms, plugin_ref, plugin_request};
use crate::store::{Job, StoreError, WriteCtx};

/// Longest the worker sleeps without looking at the queue (catches jobs other replicas enqueue).
pub const MAX_SLEEP: Duration = Duration::from_secs(5);

/// How long the worker lets newly enqueued jobs gather before claiming them.
const CLAIM_BATCH_WINDOW: Duration = Duration::from_millis(2);

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// This worker's id (in job locks).
    pub id: String,
    /// Claimed jobs are held this long, renewed every third of it while running.
    pub lease_ms: i64,
    /// Jobs run at once.
    pub concurrency: u32,
    /// Attempts at provisioning (transient failures) before failing the request.
    pub provision_attempts: u32,
    /// Longest backoff between retries.
    pub retry_max_ms: i64,
    /// The end-of-grant clean-up runs this long after the natural end.
    pub cleanup_delay_ms: i64,
}

/// Exponential backoff with jitter: 1 s, 2 s, 4 s... capped at `max_ms`.
pub fn backoff_ms(attempts: u32, max_ms: i64) -> i64 {
    let base = 1000i64.saturating_mul(1i64 << attempts.min(20));
    let capped = base.min(max_ms.max(1000));
    let jitter = rand::rng().random_range(0..=capped / 5);
    capped - capped / 10 + jitter
}

/// Run the worker until `shutdown` turns true; then stop claiming and wait for running jobs up to
/// `grace` (jobs still running keep their lease and run again after it).
pub async fn run(
    service: Service,
    cfg: WorkerConfig,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let wake = service.wake_handle();
    let slots = Arc::new(Semaphore::new(cfg.concurrency.max(1) as usize));
    let mut running: JoinSet<()> = JoinSet::new();
    let cfg = Arc::new(cfg);
    tracing::info!(worker = %cfg.id, "job worker started");
    loop {
        if *shutdown.borrow() {
            break;
        }
        while running.try_join_next().is_some() {}
        let free = slots.available_permits();
        let mut claimed = 0;
        if free > 0 {
            let limit = u32::try_from(free).unwrap_or(u32::MAX);
            match service
                .store()
                .claim_jobs(&cfg.id, now_ms(), cfg.lease_ms, limit)
                .await
            {
                Ok(jobs) => {
                    claimed = jobs.len();
                    for job in jobs {
                        let Ok(permit) = slots.clone().acquire_owned().await else {
                            break;
                        };
                        let svc = service.clone();
                        let cfg = cfg.clone();
                        running.spawn(async move {
                            run_with_lease(&svc, &cfg, job).await;
                            drop(permit);
                        });
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "claiming jobs failed; retrying shortly");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
            }
        }
        if claimed > 0 && claimed == free {
            // There may be more due right now.
            continue;
        }
        let sleep = match service.store().next_due().await {
            Ok(Some(due)) => {
                let ms = (due - now_ms()).clamp(0, MAX_SLEEP.as_millis() as i64);
                Duration::from_millis(u64::try_from(ms).unwrap_or(0))
            }
            Ok(None) => MAX_SLEEP,
            Err(e) => {
                tracing::error!(error = %e, "reading the queue failed");
                Duration::from_secs(1)
            }
        };
        if sleep.is_zero() && free == 0 {
            // Every slot is busy: wait for one to finish.
            tokio::select! {
                _ = running.join_next() => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        if sleep.is_zero() {
            // Due but claimed by someone else whose lease is about to run out; do not spin.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = wake.notified() => {
                // New work arrives in bursts: gather a little before claiming, so one claim
                // transaction serves several jobs.
                tokio::time::sleep(CLAIM_BATCH_WINDOW).await;
            }
            _ = running.join_next(), if !running.is_empty() => {}
            _ = shutdown.changed() => {}
        }
    }
    tracing::info!(worker = %cfg.id, running = running.len(), "job worker stopping");
    let _ = tokio::time::timeout(grace, async {
        while running.join_next().await.is_some() {}
    })
    .await;
    running.abort_all();
}

/// Run one job, renewing its lease while it runs.
async fn run_with_lease(service: &Service, cfg: &WorkerConfig, job: Job) {
    let renew_every =
        Duration::from_millis(u64::try_from(cfg.lease_ms / 3).unwrap_or(1000).max(100));
    let work = run_job(service, cfg, &job);
    tokio::pin!(work);
    loop {
        tokio::select! {
            () = &mut work => break,
            _ = tokio::time::sleep(renew_every) => {
                if let Err(e) = service.store().extend_lease(&cfg.id, &[job.id], now_ms() + cfg.lease_ms).await {
                    tracing::warn!(error = %e, job = job.id, "could not renew a job lease");
                }
            }
        }
    }
}

async fn run_job(service: &Service, cfg: &WorkerConfig, job: &Job) {
    let kind = job.kind.as_str();
    let outcome = match job.kind {
        JobKind::Timeout => simple(service, cfg, job, Action::TimeOut).await,
        JobKind::Expire => simple(service, cfg, job, Action::Expire).await,
        JobKind::Provision => provision(service, cfg, job).await,
        JobKind::Revoke => revoke(service, cfg, job).await,
    };
    match outcome {
        Ok(o) => service.metrics().job(kind, o),
        Err(e) => {
            service.metrics().job(kind, "error");
            tracing::error!(job = job.id, kind, request = %job.request_id, error = %e, "job failed; it will run again");
            let at = now_ms() + backoff_ms(job.attempts, cfg.retry_max_ms);
            if let Err(e) = service.store().retry_job(job, at, &e.to_string()).await {
                tracing::error!(error = %e, "could not reschedule a job; its lease will expire and it will run again");
            }
        }
    }
}

fn ctx() -> WriteCtx {
    WriteCtx::default()
}

/// Apply a time-driven action; stale or early jobs are completed or rescheduled.
async fn simple(
    service: &Service,
    cfg: &WorkerConfig,
    job: &Job,
    action: Action,
) -> Result<&'static str, StoreError> {
    for _ in 0..8 {
        let Some(r) = service.store().get_request(&job.request_id).await? else {
            service.store().complete_job(job).await?;
            return Ok("stale");
        };
        let now = now_ms();
        match r.apply(action.clone(), now) {
            Ok(t) => match service.store().commit(&t, &ctx(), Some(job)).await {
                Ok(()) => {
                    service.metrics().transitions(&t);
                    if !t.jobs.is_empty() {
                        service.wake_handle().notify_one();
                    }
                    return Ok("done");
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e),
            },
            Err(DomainError::NotDue) => {
                let due = match job.kind {
                    JobKind::Expire => r
                        .grant
                        .as_ref()
                        .map(|g| g.expires_at)
                        .or_else(|| r.action.as_ref().and_then(|a| a.valid_until))
                        .unwrap_or(now),
                    _ => r.pending_until,
                };
                service
                    .store()
                    .retry_job(job, due.max(now + 1), "ran early")
                    .await?;
                return Ok("early");
            }
            Err(_)
                if job.kind == JobKind::Expire
                    && matches!(r.state, State::Revoked | State::Ended)
                    && r.grant.is_some() =>
            {
                return cleanup_at_end(service, cfg, job, &r).await;
            }
            Err(_) => {
                service.store().complete_job(job).await?;
                return Ok("stale");
            }
        }
    }
    Err(StoreError::Conflict)
}

async fn provision(
    service: &Service,
    cfg: &WorkerConfig,
    job: &Job,
) -> Result<&'static str, StoreError> {
    // Approved -> Provisioning is applied in memory and persisted together with the outcome:
    // one transaction per grant. A crash in between leaves the request approved with its job
    // queued, so the (idempotent) grant simply runs again.
    let loaded = match service.store().get_request(&job.request_id).await? {
        Some(r) => r,
        None => {
            service.store().complete_job(job).await?;
            return Ok("stale");
        }
    };
    let mut started = match loaded.state {
        State::Approved => match loaded.apply(Action::StartProvision, now_ms()) {
            Ok(t) => Some(t),
            Err(_) => {
                service.store().complete_job(job).await?;
                return Ok("stale");
            }
        },
        State::Provisioning => None,
        _ => {
            service.store().complete_job(job).await?;
            return Ok("stale");
        }
    };
    let mut r = started
        .as_ref()
        .map_or(loaded.clone(), |t| t.request.clone());

    let policy = service.policy();
    let activated_at = now_ms();
    let expires_at = activated_at.saturating_add(crate::domain::secs_to_ms(r.duration_secs));
    let connector = policy
        .entitlement(&r.entitlement)
        .map(|e| e.connector.clone());
    let result: Result<(plugin::Granted, String), String> = match connector {
        None => Err(format!(
            "entitlement `{}` is no longer configured",
            r.entitlement
        )),
        Some(c) => match policy.plugin(&c.plugin) {
            None => Err(format!("connector plugin `{}` is not loaded", c.plugin)),
            Some(p) => {
                let req = plugin::GrantRequest {
                    request: plugin_request(&r),
                    settings: c.settings.clone(),
                    expires_at,
                    now: activated_at,
                };
                match p.grant(&req).await {
                    Ok(g) => Ok((g, c.plugin.clone())),
                    Err(f) => {
                        let transient = f.is_transient();
                        if let ConnectorFailure::Plugin(pe) = &f {
                            service.metrics().plugin_error(pe.code());
                        }
                        if transient && job.attempts + 1 < cfg.provision_attempts {
                            let at = now_ms() + backoff_ms(job.attempts, cfg.retry_max_ms);
                            tracing::warn!(request = %r.id, error = %f, attempt = job.attempts + 1, "provisioning failed; retrying");
                            service.store().retry_job(job, at, &f.to_string()).await?;
                            return Ok("retry");
                        }
                        Err(f.to_string())
                    }
                }
            }
        },
    };
    for _ in 0..8 {
        let now = now_ms();
        let action = match &result {
            Ok((g, _)) => Action::Provisioned {
                activated_at,
                handle: g.handle.clone(),
                summary: g.summary.clone(),
                plugin: plugin_ref(&g.plugin),
            },
            Err(e) => Action::ProvisionFailed { error: e.clone() },
        };
        match r.apply(action, now) {
            Ok(t) => {
                let t = match started.take() {
                    Some(s) => s.then(t),
                    None => t,
                };
                match service.store().commit(&t, &ctx(), Some(job)).await {
                    Ok(()) => {
                        service.metrics().transitions(&t);
                        if !t.jobs.is_empty() {
                            service.wake_handle().notify_one();
                        }
                        return Ok(if result.is_ok() { "done" } else { "failed" });
                    }
                    Err(StoreError::Conflict) => {
                        // Revoked meanwhile, most likely: reload and record the grant so the
                        // revocation takes away what was just granted.
                        match service.store().get_request(&job.request_id).await? {
                            Some(fresh) => {
                                started = match fresh.state {
                                    State::Approved => {
                                        fresh.apply(Action::StartProvision, now_ms()).ok()
                                    }
                                    _ => None,
                                };
                                r = started.as_ref().map_or(fresh, |t| t.request.clone());
                            }
                            None => return Ok("stale"),
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => {
                tracing::error!(request = %r.id, error = %e, "provision result could not be recorded");
                service.store().complete_job(job).await?;
                return Ok("stale");
            }
        }
    }
    Err(StoreError::Conflict)
}

/// Call the entitlement's connector to take access away.
async fn connector_revoke(
    service: &Service,
    r: &Request,
    reason: RevokeReason,
) -> Result<(), String> {
    let policy = service.policy();
    let Some(c) = policy
        .entitlement(&r.entitlement)
        .map(|e| e.connector.clone())
    else {
        return Err(format!(
            "entitlement `{}` is no longer configured; restore it so the grant can be revoked",
            r.entitlement
        ));
    };
    let Some(p) = policy.plugin(&c.plugin) else {
        return Err(format!("connector plugin `{}` is not loaded", c.plugin));
    };
    let handle = r
        .grant
        .as_ref()
        .map_or_else(|| "{}".to_owned(), |g| g.handle.to_string());
    let req = plugin::RevokeRequest {
        request: plugin_request(r),
        settings: c.settings.clone(),
        handle,
        reason: match reason {
            RevokeReason::Expired => plugin::RevokeReason::Expired,
            RevokeReason::Revoked => plugin::RevokeReason::Revoked,
            RevokeReason::Ended => plugin::RevokeReason::Ended,
            RevokeReason::Rollback => plugin::RevokeReason::Rollback,
        },
        now: now_ms(),
    };
    p.revoke(&req).await.map_err(|f| {
        if let ConnectorFailure::Plugin(pe) = &f {
            service.metrics().plugin_error(pe.code());
        }
        f.to_string()
    })
}

/// Attempts at the end-of-grant clean-up before it is given up (it removes only leftovers, such
/// as a deny policy written by an early revoke, which no longer matter once the grant has ended).
const CLEANUP_ATTEMPTS: u32 = 10;

/// At the natural end of a grant that was revoked or ended early, tell the connector once more
/// (reason `expired`) so it can remove what the early revoke left behind.
async fn cleanup_at_end(
    service: &Service,
    cfg: &WorkerConfig,
    job: &Job,
    r: &Request,
) -> Result<&'static str, StoreError> {
    let now = now_ms();
    let Some(end) = r.grant.as_ref().map(|g| g.expires_at) else {
        service.store().complete_job(job).await?;
        return Ok("stale");
    };
    // Sallyport's clock may run ahead of the cloud's: clean up only once both agree the grant
    // has ended (an early revoke's deny must outlive the session policy's end).
    let due = end.saturating_add(cfg.cleanup_delay_ms);
    if now < due {
        service.store().retry_job(job, due, "ran early").await?;
        return Ok("early");
    }
    if r.revocation.as_ref().is_some_and(|v| v.done_at.is_none()) {
        // The early revoke itself is still being retried: clean up after it.
        service
            .store()
            .retry_job(
                job,
                now + cfg.retry_max_ms.max(1000),
                "revocation still pending",
            )
            .await?;
        return Ok("retry");
    }
    let policy = service.policy();
    // A connector that is no longer configured cannot say: the call below then fails, is
    // retried, and ends in `grant.cleanup_failed` for an operator to see.
    let declines = policy
        .entitlement(&r.entitlement)
        .and_then(|e| policy.plugin(&e.connector.plugin))
        .is_some_and(|p| !p.manifest().cleanup_at_end);
    if declines {
        // The early revoke removed everything (the connector did not ask for a second call,
        // which for access not scoped to one request could take a newer grant's away).
        service.store().complete_job(job).await?;
        return Ok("stale");
    }
    let (action, error) = match connector_revoke(service, r, RevokeReason::Expired).await {
        Ok(()) => ("grant.cleaned_up", None),
        Err(e) if job.attempts + 1 < CLEANUP_ATTEMPTS => {
            let at = now_ms() + backoff_ms(job.attempts, cfg.retry_max_ms);
            service.store().retry_job(job, at, &e).await?;
            return Ok("retry");
        }
        Err(e) => ("grant.cleanup_failed", Some(e)),
    };
    let event = crate::domain::Event {
        at: now,
        actor: "system".into(),
        action: action.into(),
        subject: r.id.clone(),
        before: serde_json::json!({ "state": r.state }),
        after: serde_json::json!({ "state": r.state, "error": error }),
        channel: crate::domain::Channel::System,
        plugin: None,
    };
    service.store().append_events(&[event], &ctx()).await?;
    service.store().complete_job(job).await?;
    Ok(if error.is_none() {
        "cleaned_up"
    } else {
        "failed"
    })
}

async fn revoke(
    service: &Service,
    cfg: &WorkerConfig,
    job: &Job,
) -> Result<&'static str, StoreError> {
    let Some(r) = service.store().get_request(&job.request_id).await? else {
        service.store().complete_job(job).await?;
        return Ok("stale");
    };
    let Some(rev) = r.revocation.clone().filter(|v| v.done_at.is_none()) else {
        service.store().complete_job(job).await?;
        return Ok("stale");
    };
    let outcome = connector_revoke(service, &r, rev.reason).await;
    let action = match &outcome {
        Ok(()) => Action::RevokeSucceeded,
        Err(e) => Action::RevokeFailed { error: e.clone() },
    };
    let mut current = r;
    for _ in 0..8 {
        let t = match current.apply(action.clone(), now_ms()) {
            Ok(t) => t,
            Err(_) => {
                service.store().complete_job(job).await?;
                return Ok("stale");
            }
        };
        let done = if outcome.is_ok() { Some(job) } else { None };
        match service.store().commit(&t, &ctx(), done).await {
            Ok(()) => {
                service.metrics().transitions(&t);
                break;
            }
            Err(StoreError::Conflict) => {
                match service.store().get_request(&job.request_id).await? {
                    Some(fresh) => current = fresh,
                    None => return Ok("stale"),
                }
            }
            Err(e) => return Err(e),
        }
    }
    match outcome {
        Ok(()) => Ok("done"),
        Err(e) => {
            // Never give up: access must go. The error is visible on the request meanwhile.
            let at = now_ms() + backoff_ms(job.attempts, cfg.retry_max_ms);
            tracing::warn!(request = %job.request_id, error = %e, attempt = job.attempts + 1, "revocation failed; retrying");
            service.store().retry_job(job, at, &e).await?;
            Ok("retry")
        }
    }
}
