//! JSON views of domain objects, as the API shows them.

use serde_json::{Value, json};

use crate::audit::AuditRecord;
use crate::config::EntitlementConfig;
use crate::domain::{Millis, Request, format_duration};
use crate::service::Caller;
use crate::store::TokenRecord;

/// RFC 3339, UTC.
pub fn time(ms: Millis) -> Value {
    jiff::Timestamp::from_millisecond(ms).map_or(Value::Null, |t| Value::String(t.to_string()))
}

fn opt_time(ms: Option<Millis>) -> Value {
    ms.map_or(Value::Null, time)
}

/// A request, with its reviews, grant and revocation.
pub fn request(r: &Request, caller: &Caller, now: Millis) -> Value {
    let grant = r.grant.as_ref().map(|g| {
        let mut v = json!({
            "summary": g.summary,
            "activated_at": time(g.activated_at),
            "expires_at": time(g.expires_at),
            "seconds_left": if r.is_active_at(now) { (g.expires_at - now) / 1000 } else { 0 },
            "plugin": g.plugin,
        });
        if caller.roles.admin {
            v["handle"] = g.handle.clone();
        }
        v
    });
    let revocation = r.revocation.as_ref().map(|v| {
        json!({
            "reason": v.reason.as_str(),
            "requested_at": time(v.requested_at),
            "status": if v.done_at.is_some() { "done" } else { "pending" },
            "done_at": opt_time(v.done_at),
            "failed_attempts": v.attempts,
            "last_error": v.last_error,
        })
    });
    json!({
        "id": r.id,
        "entitlement": r.entitlement,
        "requester": r.requester,
        "state": r.state,
        "duration": format_duration(r.duration_secs),
        "duration_secs": r.duration_secs,
        "justification": r.justification,
        "ticket": r.ticket,
        "created_at": time(r.created_at),
        "updated_at": time(r.updated_at),
        "pending_until": time(r.pending_until),
        "reason": r.reason,
        "approval_reason": r.approval_reason,
        "break_glass": r.break_glass,
        "decided_by": r.decided_by,
        "requirements": r.requirements,
        "reviews": r.reviews.iter().map(|rv| json!({
            "reviewer": rv.reviewer,
            "verdict": rv.verdict,
            "comment": rv.comment,
            "channel": rv.channel,
            "at": time(rv.at),
        })).collect::<Vec<_>>(),
        "can_review": r.may_review(&caller.principal),
        "grant": grant,
        "revocation": revocation,
        "action": r.action.as_ref().map(|a| json!({
            "kind": r.entitlement,
            "parameters": a.parameters,
            "params_digest": a.digest,
            "workload": a.workload,
            "approved_at": opt_time(a.approved_at),
            "valid_until": opt_time(a.valid_until),
            "consumed_at": opt_time(a.consumed_at),
            "consumed_by": a.consumed_by,
        })),
        "version": r.version,
    })
}

/// An action request with, for its requester once approved, the attestation.
pub fn action(v: &crate::service::ActionView, caller: &Caller, now: Millis) -> Value {
    let mut out = request(&v.request, caller, now);
    out["attestation"] = json!(v.attestation);
    out
}

/// An action kind as requesters see it.
pub fn action_kind(k: &crate::config::ActionKindConfig, caller: &Caller) -> Value {
    json!({
        "name": k.rules.id,
        "description": k.description,
        "validity": format_duration(k.rules.default_duration_secs),
        "requestable": k.rules.may_request(&caller.principal),
        "parameters": k.parameters.iter().map(|(n, p)| json!({
            "name": n,
            "type": p.kind.as_str(),
            "required": p.required,
            "pattern": p.pattern.as_ref().map(|r| r.as_str()),
            "description": p.description,
        })).collect::<Vec<_>>(),
        "pipelines": k.pipelines.iter().map(|p| json!({
            "issuer": p.issuer, "audience": p.audience, "subject": p.subject,
        })).collect::<Vec<_>>(),
    })
}

/// An entitlement as requesters see it.
pub fn entitlement(e: &EntitlementConfig, caller: &Caller) -> Value {
    json!({
        "id": e.rules.id,
        "description": e.description,
        "max_duration": format_duration(e.rules.max_duration_secs),
        "max_duration_secs": e.rules.max_duration_secs,
        "default_duration": format_duration(e.rules.default_duration_secs),
        "default_duration_secs": e.rules.default_duration_secs,
        "justification_pattern": e.rules.justification_pattern.as_ref().map(|r| r.as_str()),
        "ticket_required": e.rules.ticket_required,
        "pending_ttl_secs": e.rules.pending_ttl_secs,
        "break_glass": e.rules.break_glass,
        "connector": e.connector.plugin,
        "approval": e.approval.plugin,
        "requestable": e.rules.may_request(&caller.principal),
    })
}

/// An audit event.
pub fn audit(r: &AuditRecord) -> Value {
    json!({
        "seq": r.seq,
        "at": time(r.at),
        "at_ms": r.at,
        "actor": r.actor,
        "action": r.action,
        "subject": r.subject,
        "before": r.before,
        "after": r.after,
        "channel": r.channel,
        "request_id": r.request_id,
        "plugin": r.plugin,
        "prev_hash": r.prev_hash,
        "hash": r.hash,
    })
}

/// Audit events as a JSON-lines download.
pub fn audit_jsonl(events: &[AuditRecord]) -> axum::response::Response {
    use axum::http::header;
    use axum::response::IntoResponse;
    let mut body = String::new();
    for e in events {
        body.push_str(&audit(e).to_string());
        body.push('\n');
    }
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"sallyport-audit.jsonl\"",
            ),
        ],
        body,
    )
        .into_response()
}

/// An API token (never its secret).
pub fn token(t: &TokenRecord, now: Millis) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "scope": t.scope,
        "user": t.user_id,
        "created_at": time(t.created_at),
        "expires_at": time(t.expires_at),
        "last_used_at": opt_time(t.last_used_at),
        "revoked_at": opt_time(t.revoked_at),
        "active": t.revoked_at.is_none() && now < t.expires_at,
    })
}
