//! The request aggregate and its transitions.
//!
//! ```text
//! Pending -> Approved -> Provisioning -> Active -> Expired | Revoked | Ended
//! Pending -> Denied | Cancelled | TimedOut
//! Provisioning -> Failed        (connector error; whatever was granted is rolled back)
//! Approved | Provisioning -> Revoked   (revoked before access was in place)
//! ```
//!
//! Taking access away is a second, independent track: a [`Revocation`] that stays pending (and
//! retried by the job queue) until the connector confirms it.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Millis;

/// Longest justification accepted.
pub const MAX_JUSTIFICATION: usize = 2000;
/// Longest ticket reference accepted.
pub const MAX_TICKET: usize = 200;
/// Longest review comment accepted.
pub const MAX_COMMENT: usize = 2000;

/// A person or workload, as Sallyport saw them when they acted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// Stable id (OIDC subject, directory user name).
    pub id: String,
    /// E-mail address, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Display name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Group names.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl Principal {
    /// `user:<id>`, as written in the audit log.
    pub fn actor(&self) -> String {
        format!("user:{}", self.id)
    }
}

/// Someone acting on a request, whether they hold the admin role, and through which channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Who.
    pub principal: Principal,
    /// Admins may revoke and cancel any request.
    pub admin: bool,
    /// Where the action came from.
    pub channel: Channel,
}

/// Where a request is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting for reviews.
    Pending,
    /// Approved; the connector has not been called yet.
    Approved,
    /// The connector is putting access in place.
    Provisioning,
    /// Access is in place until the grant's `expires_at`.
    Active,
    /// The grant reached its end.
    Expired,
    /// Revoked by an admin or an approver.
    Revoked,
    /// Ended early by its holder.
    Ended,
    /// Denied by a reviewer or the policy.
    Denied,
    /// Withdrawn by the requester before a decision.
    Cancelled,
    /// No decision within the entitlement's pending-request TTL.
    TimedOut,
    /// The connector failed; nothing stays granted.
    Failed,
}

impl State {
    /// Every state, in lifecycle order.
    pub const ALL: [State; 11] = [
        State::Pending,
        State::Approved,
        State::Provisioning,
        State::Active,
        State::Expired,
        State::Revoked,
        State::Ended,
        State::Denied,
        State::Cancelled,
        State::TimedOut,
        State::Failed,
    ];

    /// The snake_case name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Provisioning => "provisioning",
            State::Active => "active",
            State::Expired => "expired",
            State::Revoked => "revoked",
            State::Ended => "ended",
            State::Denied => "denied",
            State::Cancelled => "cancelled",
            State::TimedOut => "timed_out",
            State::Failed => "failed",
        }
    }

    /// Parse the snake_case name.
    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// No lifecycle move leaves this state (revocation may still be completing).
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            State::Pending | State::Approved | State::Provisioning | State::Active
        )
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an action came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// The web UI.
    Web,
    /// An approval link from an e-mail, followed by its reviewer signed in.
    EmailLink,
    /// An approval link from an e-mail, acting without sign-in (`link_only_approval`).
    EmailLinkOnly,
    /// The JSON API (the CLI included).
    Api,
    /// Sallyport itself (jobs).
    System,
}

impl Channel {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Web => "web",
            Channel::EmailLink => "email_link",
            Channel::EmailLinkOnly => "email_link_only",
            Channel::Api => "api",
            Channel::System => "system",
        }
    }
}

/// A reviewer's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Agree.
    Approve,
    /// Refuse.
    Deny,
}

impl Verdict {
    /// `approve` or `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Deny => "deny",
        }
    }

    /// Parse `approve` or `deny`.
    pub fn parse(s: &str) -> Option<Verdict> {
        [Verdict::Approve, Verdict::Deny]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// One review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    /// Who.
    pub reviewer: Principal,
    /// What.
    pub verdict: Verdict,
    /// Why, if said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Through which channel.
    pub channel: Channel,
    /// When.
    pub at: Millis,
}

/// The plugin that produced an answer, exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRef {
    /// Manifest name.
    pub name: String,
    /// Manifest version.
    pub version: String,
    /// SHA-256 of the component.
    pub sha256: String,
}

/// One group of people whose approval is needed (from the approval plugin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirement {
    /// Stage name.
    pub name: String,
    /// Users who may satisfy it.
    pub users: Vec<String>,
    /// Groups whose members may satisfy it.
    pub groups: Vec<String>,
    /// Approvals needed.
    pub needed: u32,
    /// Who counted so far.
    pub approved_by: Vec<String>,
}

impl Requirement {
    /// May this principal review toward it?
    pub fn admits(&self, p: &Principal) -> bool {
        self.users.contains(&p.id) || self.groups.iter().any(|g| p.groups.contains(g))
    }

    /// Is it met?
    pub fn satisfied(&self) -> bool {
        self.approved_by.len() >= self.needed as usize
    }
}

/// What the approval policy concluded, or that it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyOutcome {
    /// Approved.
    Approve {
        /// Why.
        reason: String,
        /// The approval rests on the requester's own review.
        break_glass: bool,
    },
    /// Denied.
    Deny {
        /// Why.
        reason: String,
    },
    /// More reviews needed.
    Pending {
        /// Every requirement.
        requirements: Vec<Requirement>,
    },
    /// The plugin failed (trap, timeout, malformed answer...): the request is denied.
    Error {
        /// Stable error code.
        code: String,
        /// Details.
        message: String,
    },
}

/// Access a connector put in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The connector's opaque handle (no secrets).
    pub handle: Value,
    /// One line for people.
    pub summary: String,
    /// The connector that granted it.
    pub plugin: PluginRef,
    /// When access started.
    pub activated_at: Millis,
    /// When access ends: `activated_at + duration`.
    pub expires_at: Millis,
}

/// Why access is being taken away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeReason {
    /// The grant reached its end.
    Expired,
    /// Revoked by someone.
    Revoked,
    /// Ended early by its holder.
    Ended,
    /// Undoing a failed grant.
    Rollback,
}

impl RevokeReason {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeReason::Expired => "expired",
            RevokeReason::Revoked => "revoked",
            RevokeReason::Ended => "ended",
            RevokeReason::Rollback => "rollback",
        }
    }
}

/// Taking access away through the connector: pending until it confirms, retried meanwhile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Why.
    pub reason: RevokeReason,
    /// When Sallyport decided it.
    pub requested_at: Millis,
    /// Failed attempts so far.
    pub attempts: u32,
    /// The last failure, shown until it succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the connector confirmed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_at: Option<Millis>,
}

/// The aggregate: a request, its reviews, its grant and its revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Id (a UUIDv7, so ids sort by creation time).
    pub id: String,
    /// The entitlement asked for.
    pub entitlement: String,
    /// Who asked.
    pub requester: Principal,
    /// How long access lasts once active.
    pub duration_secs: u64,
    /// Why.
    pub justification: String,
    /// Change or incident ticket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// Where it is.
    pub state: State,
    /// When it was filed.
    pub created_at: Millis,
    /// When it last changed.
    pub updated_at: Millis,
    /// A pending request times out at this instant.
    pub pending_until: Millis,
    /// Whether the entitlement allowed break-glass self-approval when the request was filed.
    pub break_glass_allowed: bool,
    /// The approval policy's latest requirements (who may review).
    #[serde(default)]
    pub requirements: Vec<Requirement>,
    /// Every review, in order.
    #[serde(default)]
    pub reviews: Vec<Review>,
    /// Why it ended as it did (denial, failure, revocation, expiry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why the approval policy approved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_reason: Option<String>,
    /// The approval rests on break-glass self-approval.
    #[serde(default)]
    pub break_glass: bool,
    /// The approval plugin that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<PluginRef>,
    /// The access put in place, once active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<Grant>,
    /// Taking it away, once decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<Revocation>,
    /// Set for an action request (then `entitlement` is the action kind and `duration_secs` how
    /// long the approval stays valid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<super::ActionDetails>,
    /// Compare-and-set version: every persisted transition increments it.
    pub version: i64,
}

/// What an entitlement's policy says about new requests (from the configuration).
#[derive(Debug, Clone)]
pub struct EntitlementRules {
    /// The entitlement id.
    pub id: String,
    /// Longest duration.
    pub max_duration_secs: u64,
    /// Duration when none is asked.
    pub default_duration_secs: u64,
    /// Groups whose members may request it; `*` means everyone signed in.
    pub requester_groups: Vec<String>,
    /// Users who may request it regardless of groups.
    pub requester_users: Vec<String>,
    /// A justification must match this.
    pub justification_pattern: Option<regex::Regex>,
    /// A ticket is required.
    pub ticket_required: bool,
    /// A pending request times out after this long.
    pub pending_ttl_secs: u64,
    /// The requester may approve their own request (audited loudly).
    pub break_glass: bool,
}

impl EntitlementRules {
    /// May this principal request it?
    pub fn may_request(&self, p: &Principal) -> bool {
        self.requester_groups.iter().any(|g| g == "*")
            || self.requester_users.contains(&p.id)
            || self
                .requester_groups
                .iter()
                .any(|g| p.groups.iter().any(|pg| pg == g))
    }
}

/// Input to [`Request::create`], as the requester typed it.
#[derive(Debug, Clone)]
pub struct NewRequest {
    /// Who asks.
    pub requester: Principal,
    /// For how long; `None` is the entitlement's default.
    pub duration_secs: Option<u64>,
    /// Why.
    pub justification: String,
    /// Ticket, if any.
    pub ticket: Option<String>,
    /// Where it came from.
    pub channel: Channel,
}

/// Something that happened, to be written to the audit chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When.
    pub at: Millis,
    /// `user:<id>` or `system`.
    pub actor: String,
    /// What, e.g. `request.approved`.
    pub action: String,
    /// The request id.
    pub subject: String,
    /// The relevant state before (`null` for creation).
    pub before: Value,
    /// The relevant state after.
    pub after: Value,
    /// Through which channel.
    pub channel: Channel,
    /// The plugin involved, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginRef>,
}

/// Background work a transition causes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Call the connector's `grant`.
    Provision,
    /// Call the connector's `revoke` until it succeeds.
    Revoke,
    /// End an active grant at its `expires_at`.
    Expire,
    /// Time out a pending request at its `pending_until`.
    Timeout,
}

impl JobKind {
    /// Every kind.
    pub const ALL: [JobKind; 4] = [
        JobKind::Provision,
        JobKind::Revoke,
        JobKind::Expire,
        JobKind::Timeout,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Provision => "provision",
            JobKind::Revoke => "revoke",
            JobKind::Expire => "expire",
            JobKind::Timeout => "timeout",
        }
    }

    /// Parse the snake_case name.
    pub fn parse(s: &str) -> Option<JobKind> {
        JobKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A job to enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    /// What.
    pub kind: JobKind,
    /// For which request.
    pub request_id: String,
    /// Not before.
    pub run_at: Millis,
}

/// A transition's result: the new aggregate, and what to record and schedule with it.
#[derive(Debug, Clone)]
pub struct Transition {
    /// The aggregate after the action (its `version` not yet incremented: the store does that).
    pub request: Request,
    /// Audit events, in order.
    pub events: Vec<Event>,
    /// Jobs to enqueue.
    pub jobs: Vec<JobSpec>,
}

impl Transition {
    /// This transition followed by `next` (which was applied to this one's result), persisted
    /// as one: the events and jobs of both, the final aggregate, this one's expected version.
    pub fn then(mut self, next: Transition) -> Transition {
        let version = self.request.version;
        self.events.extend(next.events);
        self.jobs.extend(next.jobs);
        self.request = next.request;
        self.request.version = version;
        self
    }
}

/// Why an action was refused. Nothing changes when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The input is unacceptable.
    #[error("{field}: {message}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The principal may not request this entitlement.
    #[error("you may not request `{entitlement}`: it is open to {who}")]
    NotRequestable {
        /// The entitlement.
        entitlement: String,
        /// Who may.
        who: String,
    },
    /// The action does not apply in this state.
    #[error("cannot {action} a request that is {state}")]
    Illegal {
        /// What was attempted.
        action: &'static str,
        /// The request's state.
        state: State,
    },
    /// The requester reviewed their own request, and the entitlement has no break-glass.
    #[error(
        "you cannot review your own request: `{entitlement}` does not allow break-glass self-approval"
    )]
    SelfReview {
        /// The entitlement.
        entitlement: String,
    },
    /// The reviewer is not named by any requirement of the approval policy.
    #[error("{reviewer} is not an eligible reviewer for this request; eligible: {eligible}")]
    NotEligible {
        /// Who tried.
        reviewer: String,
        /// Who may, for the message.
        eligible: String,
    },
    /// The reviewer has already reviewed.
    #[error("{reviewer} has already reviewed this request")]
    AlreadyReviewed {
        /// Who.
        reviewer: String,
    },
    /// The actor may not do this to this request.
    #[error("{0}")]
    Forbidden(String),
    /// A scheduled action ran before its time (a stale or early job): nothing to do.
    #[error("not due yet")]
    NotDue,
    /// An action's approval cannot be used (already consumed, expired, revoked).
    #[error("{message}")]
    Unusable {
        /// `already_consumed`, `expired` or `not_usable`.
        code: &'static str,
        /// For people.
        message: String,
    },
}

impl DomainError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::Invalid { .. } => "invalid_input",
            DomainError::NotRequestable { .. } => "not_requestable",
            DomainError::Illegal { .. } => "illegal_state",
            DomainError::SelfReview { .. } => "self_review",
            DomainError::NotEligible { .. } => "not_eligible",
            DomainError::AlreadyReviewed { .. } => "already_reviewed",
            DomainError::Forbidden(_) => "forbidden",
            DomainError::NotDue => "not_due",
            DomainError::Unusable { code, .. } => code,
        }
    }
}

/// Something to do to a request.
#[derive(Debug, Clone)]
pub enum Action {
    /// The approval policy answered (at creation and after every review).
    Evaluated {
        /// Its answer.
        outcome: PolicyOutcome,
        /// The plugin, when it answered at all.
        plugin: Option<PluginRef>,
    },
    /// A reviewer reviewed.
    Review(Review),
    /// The requester (or an admin) withdraws a pending request.
    Cancel(Actor),
    /// The pending-request TTL ran out.
    TimeOut,
    /// The provision job starts calling the connector.
    StartProvision,
    /// The connector granted access.
    Provisioned {
        /// When access started: the time the connector was told (its `expires-at` was computed
        /// from it), not later than `now`.
        activated_at: Millis,
        /// Its handle.
        handle: Value,
        /// Its summary.
        summary: String,
        /// The connector plugin.
        plugin: PluginRef,
    },
    /// The connector failed for good.
    ProvisionFailed {
        /// Why.
        error: String,
    },
    /// The grant reached its end.
    Expire,
    /// An admin or an approver revokes access (or an approval not yet in place).
    Revoke {
        /// Who.
        by: Actor,
        /// Why.
        reason: String,
    },
    /// The holder is done early.
    End(Actor),
    /// The connector confirmed the revocation.
    RevokeSucceeded,
    /// A revocation attempt failed; it will be retried.
    RevokeFailed {
        /// Why.
        error: String,
    },
    /// An approved action's attestation is used, once.
    Consume {
        /// Who presented it (`user:<id>`, or `attestation` for its bearer).
        by: String,
        /// Where it came from.
        channel: Channel,
    },
}

impl Action {
    fn name(&self) -> &'static str {
        match self {
            Action::Evaluated { .. } => "evaluate",
            Action::Review(_) => "review",
            Action::Cancel(_) => "cancel",
            Action::TimeOut => "time out",
            Action::StartProvision => "provision",
            Action::Provisioned { .. } => "activate",
            Action::ProvisionFailed { .. } => "fail",
            Action::Expire => "expire",
            Action::Revoke { .. } => "revoke",
            Action::End(_) => "end",
            Action::RevokeSucceeded | Action::RevokeFailed { .. } => "complete the revocation of",
            Action::Consume { .. } => "consume",
        }
    }
}

fn invalid(field: &'static str, message: impl Into<String>) -> DomainError {
    DomainError::Invalid {
        field,
        message: message.into(),
    }
}

/// A text field: trimmed, non-empty, bounded, and free of control characters other than
/// newlines and tabs.
fn clean_text(field: &'static str, text: &str, max: usize) -> Result<String, DomainError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if t.chars().count() > max {
        return Err(invalid(field, format!("at most {max} characters")));
    }
    if t.chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(t.to_owned())
}

/// Parse a review comment the same way as other free text (empty means none).
pub fn clean_comment(comment: Option<&str>) -> Result<Option<String>, DomainError> {
    match comment.map(str::trim) {
        None | Some("") => Ok(None),
        Some(c) => clean_text("comment", c, MAX_COMMENT).map(Some),
    }
}

fn state_value(r: &Request) -> Value {
    json!({ "state": r.state })
}

impl Request {
    /// File a new request. Validates it against the entitlement's rules.
    pub fn create(
        id: String,
        input: NewRequest,
        rules: &EntitlementRules,
        now: Millis,
    ) -> Result<Transition, DomainError> {
        if !rules.may_request(&input.requester) {
            let mut who: Vec<String> = rules
                .requester_groups
                .iter()
                .map(|g| format!("group `{g}`"))
                .collect();
            who.extend(rules.requester_users.iter().map(|u| format!("user `{u}`")));
            return Err(DomainError::NotRequestable {
                entitlement: rules.id.clone(),
                who: if who.is_empty() {
                    "nobody (no requesters are configured)".into()
                } else {
                    who.join(", ")
                },
            });
        }
        let duration = input.duration_secs.unwrap_or(rules.default_duration_secs);
        if duration == 0 {
            return Err(invalid("duration", "must be at least 1 second"));
        }
        if duration > rules.max_duration_secs {
            return Err(invalid(
                "duration",
                format!(
                    "{} is longer than the maximum of {} for `{}`",
                    super::format_duration(duration),
                    super::format_duration(rules.max_duration_secs),
                    rules.id
                ),
            ));
        }
        let justification = clean_text("justification", &input.justification, MAX_JUSTIFICATION)?;
        if let Some(re) = &rules.justification_pattern
            && !re.is_match(&justification)
        {
            return Err(invalid(
                "justification",
                format!(
                    "must match the pattern `{}` required by `{}`",
                    re.as_str(),
                    rules.id
                ),
            ));
        }
        let ticket = match input.ticket.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(t) => {
                let t = clean_text("ticket", t, MAX_TICKET)?;
                if t.chars().any(char::is_whitespace) {
                    return Err(invalid("ticket", "must not contain spaces, e.g. `OPS-123`"));
                }
                Some(t)
            }
        };
        if rules.ticket_required && ticket.is_none() {
            return Err(invalid(
                "ticket",
                format!("`{}` requires a ticket", rules.id),
            ));
        }
        let pending_until = now.saturating_add(secs_to_ms(rules.pending_ttl_secs));
        let channel = input.channel;
        let request = Request {
            id: id.clone(),
            entitlement: rules.id.clone(),
            requester: input.requester,
            duration_secs: duration,
            justification,
            ticket,
            state: State::Pending,
            created_at: now,
            updated_at: now,
            pending_until,
            break_glass_allowed: rules.break_glass,
            requirements: Vec::new(),
            reviews: Vec::new(),
            reason: None,
            approval_reason: None,
            break_glass: false,
            decided_by: None,
            grant: None,
            revocation: None,
            action: None,
            version: 0,
        };
        let event = Event {
            at: now,
            actor: request.requester.actor(),
            action: "request.created".into(),
            subject: id.clone(),
            before: Value::Null,
            after: json!({
                "state": request.state,
                "entitlement": request.entitlement,
                "duration_secs": request.duration_secs,
                "justification": request.justification,
                "ticket": request.ticket,
            }),
            channel,
            plugin: None,
        };
        Ok(Transition {
            request,
            events: vec![event],
            jobs: vec![JobSpec {
                kind: JobKind::Timeout,
                request_id: id,
                run_at: pending_until,
            }],
        })
    }

    /// File an action request: [`Request::create`] with the action's canonical parameters. The
    /// rules' durations are the approval's validity; the requester was checked by the caller
    /// (people by the rules' groups and users, pipelines by their workload identity).
    pub fn create_action(
        id: String,
        input: NewRequest,
        details: super::ActionDetails,
        rules: &EntitlementRules,
        now: Millis,
    ) -> Result<Transition, DomainError> {
        let mut t = Request::create(id, input, rules, now)?;
        if let Some(ev) = t.events.first_mut() {
            ev.action = "action.requested".into();
            ev.after = json!({
                "state": t.request.state,
                "action": t.request.entitlement,
                "parameters": details.parameters,
                "digest": details.digest,
                "validity_secs": t.request.duration_secs,
                "justification": t.request.justification,
                "workload": details.workload,
            });
        }
        t.request.action = Some(details);
        Ok(t)
    }

    /// An approved action whose attestation is valid at `now` and not yet used.
    pub fn action_usable_at(&self, now: Millis) -> bool {
        self.state == State::Active
            && self
                .action
                .as_ref()
                .is_some_and(|a| a.consumed_at.is_none() && a.valid_until.is_some_and(|v| now < v))
    }

    /// Access is in place and has not reached its end.
    pub fn is_active_at(&self, now: Millis) -> bool {
        self.state == State::Active && self.grant.as_ref().is_some_and(|g| now < g.expires_at)
    }

    /// Everyone the latest requirements admit, for messages.
    pub fn eligible_text(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        for r in &self.requirements {
            parts.extend(r.users.iter().map(|u| format!("user `{u}`")));
            parts.extend(r.groups.iter().map(|g| format!("group `{g}`")));
        }
        parts.dedup();
        if parts.is_empty() {
            "nobody".into()
        } else {
            parts.join(", ")
        }
    }

    /// May this principal review the request now (eligible, not yet reviewed, not the requester
    /// unless break-glass)?
    pub fn may_review(&self, p: &Principal) -> bool {
        self.state == State::Pending
            && !self.reviews.iter().any(|r| r.reviewer.id == p.id)
            && if p.id == self.requester.id {
                self.break_glass_allowed
            } else {
                self.requirements.iter().any(|r| r.admits(p))
            }
    }

    /// Apply an action at `now`. On error nothing changes.
    pub fn apply(&self, action: Action, now: Millis) -> Result<Transition, DomainError> {
        let illegal = |a: &Action| DomainError::Illegal {
            action: a.name(),
            state: self.state,
        };
        let mut next = self.clone();
        next.updated_at = now;
        let mut events = Vec::new();
        let mut jobs = Vec::new();
        let before = state_value(self);
        let system = "system".to_owned();
        let mut event = |next: &Request,
                         actor: &str,
                         action: &str,
                         channel: Channel,
                         plugin: Option<PluginRef>,
                         extra: Value| {
            let mut after = state_value(next);
            if let (Value::Object(a), Value::Object(e)) = (&mut after, extra) {
                a.extend(e);
            }
            events.push(Event {
                at: now,
                actor: actor.to_owned(),
                action: action.to_owned(),
                subject: next.id.clone(),
                before: before.clone(),
                after,
                channel,
                plugin,
            });
        };

        match action {
            Action::Evaluated { outcome, plugin } => {
                if self.state != State::Pending {
                    return Err(illegal(&Action::Evaluated { outcome, plugin }));
                }
                let actor = plugin
                    .as_ref()
                    .map_or_else(|| "policy".to_owned(), |p| format!("plugin:{}", p.name));
                match outcome {
                    PolicyOutcome::Approve {
                        reason,
                        break_glass,
                    } if break_glass && !self.break_glass_allowed => {
                        let reason = format!(
                            "the approval policy approved by break-glass ({reason}), but `{}` does not allow break-glass",
                            self.entitlement
                        );
                        next.state = State::Denied;
                        next.reason = Some(reason.clone());
                        next.decided_by = plugin.clone();
                        event(
                            &next,
                            &actor,
                            "request.denied",
                            Channel::System,
                            plugin,
                            json!({ "reason": reason }),
                        );
                    }
                    PolicyOutcome::Approve {
                        reason,
                        break_glass,
                    } => {
                        next.state = State::Approved;
                        next.approval_reason = Some(reason.clone());
                        next.break_glass = break_glass;
                        next.decided_by = plugin.clone();
                        next.requirements.clear();
                        let mut extra = json!({ "reason": reason, "break_glass": break_glass });
                        if let Some(a) = next.action.as_mut() {
                            // An action needs no connector: approved is usable at once.
                            let until = now.saturating_add(secs_to_ms(self.duration_secs));
                            a.approved_at = Some(now);
                            a.valid_until = Some(until);
                            next.state = State::Active;
                            extra["valid_until"] = json!(until);
                            extra["digest"] = json!(a.digest);
                            jobs.push(JobSpec {
                                kind: JobKind::Expire,
                                request_id: self.id.clone(),
                                run_at: until,
                            });
                        }
                        event(
                            &next,
                            &actor,
                            "request.approved",
                            Channel::System,
                            plugin.clone(),
                            extra,
                        );
                        if break_glass {
                            event(
                                &next,
                                &self.requester.actor(),
                                "break_glass.used",
                                Channel::System,
                                plugin,
                                json!({ "justification": self.justification }),
                            );
                        }
                        if next.action.is_none() {
                            jobs.push(JobSpec {
                                kind: JobKind::Provision,
                                request_id: self.id.clone(),
                                run_at: now,
                            });
                        }
                    }
                    PolicyOutcome::Deny { reason } => {
                        next.state = State::Denied;
                        next.reason = Some(reason.clone());
                        next.decided_by = plugin.clone();
                        event(
                            &next,
                            &actor,
                            "request.denied",
                            Channel::System,
                            plugin,
                            json!({ "reason": reason }),
                        );
                    }
                    PolicyOutcome::Pending { requirements } => {
                        if requirements != self.requirements {
                            next.requirements = requirements;
                            event(
                                &next,
                                &actor,
                                "request.pending",
                                Channel::System,
                                plugin,
                                json!({ "requirements": next.requirements }),
                            );
                        }
                    }
                    PolicyOutcome::Error { code, message } => {
                        let reason = format!("the approval policy failed ({code}): {message}");
                        next.state = State::Denied;
                        next.reason = Some(reason.clone());
                        event(
                            &next,
                            &actor,
                            "request.denied",
                            Channel::System,
                            plugin,
                            json!({ "reason": reason, "plugin_error": code }),
                        );
                    }
                }
            }
            Action::Review(review) => {
                if self.state != State::Pending {
                    return Err(illegal(&Action::Review(review)));
                }
                let who = review.reviewer.clone();
                if self.reviews.iter().any(|r| r.reviewer.id == who.id) {
                    return Err(DomainError::AlreadyReviewed {
                        reviewer: who.id.clone(),
                    });
                }
                let own = who.id == self.requester.id;
                if own && !self.break_glass_allowed {
                    return Err(DomainError::SelfReview {
                        entitlement: self.entitlement.clone(),
                    });
                }
                if !own && !self.requirements.iter().any(|r| r.admits(&who)) {
                    return Err(DomainError::NotEligible {
                        reviewer: who.id.clone(),
                        eligible: self.eligible_text(),
                    });
                }
                let comment = clean_comment(review.comment.as_deref())?;
                let review = Review {
                    comment,
                    at: now,
                    ..review
                };
                let action = match review.verdict {
                    Verdict::Approve => "review.approved",
                    Verdict::Deny => "review.denied",
                };
                let extra = json!({
                    "verdict": review.verdict,
                    "comment": review.comment,
                    "self_review": own,
                });
                let (actor, channel) = (who.actor(), review.channel);
                next.reviews.push(review);
                event(&next, &actor, action, channel, None, extra);
            }
            Action::Cancel(by) => {
                if self.state != State::Pending {
                    return Err(illegal(&Action::Cancel(by)));
                }
                if by.principal.id != self.requester.id && !by.admin {
                    return Err(DomainError::Forbidden(
                        "only the requester or an admin can cancel a request".into(),
                    ));
                }
                next.state = State::Cancelled;
                event(
                    &next,
                    &by.principal.actor(),
                    "request.cancelled",
                    by.channel,
                    None,
                    json!({}),
                );
            }
            Action::TimeOut => {
                if self.state != State::Pending {
                    return Err(illegal(&Action::TimeOut));
                }
                if now < self.pending_until {
                    return Err(DomainError::NotDue);
                }
                next.state = State::TimedOut;
                next.reason = Some("no decision before the request's time limit".into());
                event(
                    &next,
                    &system,
                    "request.timed_out",
                    Channel::System,
                    None,
                    json!({}),
                );
            }
            Action::StartProvision => {
                if self.state != State::Approved {
                    return Err(illegal(&Action::StartProvision));
                }
                next.state = State::Provisioning;
                event(
                    &next,
                    &system,
                    "grant.provisioning",
                    Channel::System,
                    None,
                    json!({}),
                );
            }
            Action::Provisioned {
                activated_at,
                handle,
                summary,
                plugin,
            } => {
                let late =
                    self.state == State::Revoked && self.grant.is_none() && self.action.is_none();
                if self.state != State::Provisioning && !late {
                    return Err(illegal(&Action::Provisioned {
                        activated_at,
                        handle,
                        summary,
                        plugin,
                    }));
                }
                let activated_at = activated_at.min(now);
                let grant = Grant {
                    handle,
                    summary: summary.clone(),
                    plugin: plugin.clone(),
                    activated_at,
                    expires_at: activated_at.saturating_add(secs_to_ms(self.duration_secs)),
                };
                let expires_at = grant.expires_at;
                next.grant = Some(grant);
                if late {
                    // Revoked while the connector was granting: take away what it just granted,
                    // even if an earlier attempt (without the handle) already "succeeded".
                    let rev = next.revocation.get_or_insert(Revocation {
                        reason: RevokeReason::Revoked,
                        requested_at: now,
                        attempts: 0,
                        last_error: None,
                        done_at: None,
                    });
                    rev.done_at = None;
                    event(
                        &next,
                        &system,
                        "grant.provisioned_after_revoke",
                        Channel::System,
                        Some(plugin),
                        json!({ "summary": summary }),
                    );
                    jobs.push(JobSpec {
                        kind: JobKind::Revoke,
                        request_id: self.id.clone(),
                        run_at: now,
                    });
                } else {
                    if now >= expires_at {
                        // The connector took longer than the whole grant: it is over already.
                        next.state = State::Expired;
                        next.reason = Some(
                            "the connector took longer than the whole grant; it ended at once"
                                .into(),
                        );
                        next.revocation = Some(Revocation {
                            reason: RevokeReason::Expired,
                            requested_at: now,
                            attempts: 0,
                            last_error: None,
                            done_at: None,
                        });
                        event(
                            &next,
                            &system,
                            "grant.expired",
                            Channel::System,
                            Some(plugin),
                            json!({ "summary": summary, "expires_at": expires_at, "lateness_ms": now - expires_at }),
                        );
                        jobs.push(JobSpec {
                            kind: JobKind::Revoke,
                            request_id: self.id.clone(),
                            run_at: now,
                        });
                        return Ok(Transition {
                            request: next,
                            events,
                            jobs,
                        });
                    }
                    next.state = State::Active;
                    event(
                        &next,
                        &system,
                        "grant.activated",
                        Channel::System,
                        Some(plugin),
                        json!({ "summary": summary, "expires_at": expires_at }),
                    );
                    jobs.push(JobSpec {
                        kind: JobKind::Expire,
                        request_id: self.id.clone(),
                        run_at: expires_at,
                    });
                }
            }
            Action::ProvisionFailed { error } => {
                let revoked_meanwhile =
                    self.state == State::Revoked && self.grant.is_none() && self.action.is_none();
                if self.state != State::Provisioning && !revoked_meanwhile {
                    return Err(illegal(&Action::ProvisionFailed { error }));
                }
                if !revoked_meanwhile {
                    next.state = State::Failed;
                    next.reason = Some(error.clone());
                }
                next.revocation = Some(Revocation {
                    reason: RevokeReason::Rollback,
                    requested_at: now,
                    attempts: 0,
                    last_error: None,
                    done_at: None,
                });
                event(
                    &next,
                    &system,
                    "grant.failed",
                    Channel::System,
                    None,
                    json!({ "error": error }),
                );
                jobs.push(JobSpec {
                    kind: JobKind::Revoke,
                    request_id: self.id.clone(),
                    run_at: now,
                });
            }
            Action::Expire if self.action.is_some() => {
                let until = self.action.as_ref().and_then(|a| a.valid_until);
                let Some(until) = until.filter(|_| self.state == State::Active) else {
                    return Err(illegal(&Action::Expire));
                };
                if now < until {
                    return Err(DomainError::NotDue);
                }
                next.state = State::Expired;
                next.reason = Some("the approval's validity ended before it was used".into());
                event(
                    &next,
                    &system,
                    "action.expired",
                    Channel::System,
                    None,
                    json!({ "valid_until": until }),
                );
            }
            Action::Expire => {
                if self.state != State::Active {
                    return Err(illegal(&Action::Expire));
                }
                let Some(g) = &self.grant else {
                    return Err(illegal(&Action::Expire));
                };
                if now < g.expires_at {
                    return Err(DomainError::NotDue);
                }
                next.state = State::Expired;
                next.reason = Some("the grant reached its end".into());
                next.revocation = Some(Revocation {
                    reason: RevokeReason::Expired,
                    requested_at: now,
                    attempts: 0,
                    last_error: None,
                    done_at: None,
                });
                event(
                    &next,
                    &system,
                    "grant.expired",
                    Channel::System,
                    None,
                    json!({ "expires_at": g.expires_at, "lateness_ms": now - g.expires_at }),
                );
                jobs.push(JobSpec {
                    kind: JobKind::Revoke,
                    request_id: self.id.clone(),
                    run_at: now,
                });
            }
            Action::Revoke { by, reason } => {
                if !matches!(
                    self.state,
                    State::Approved | State::Provisioning | State::Active
                ) {
                    return Err(illegal(&Action::Revoke { by, reason }));
                }
                let approver = self.reviews.iter().any(|r| {
                    r.reviewer.id == by.principal.id
                        && r.verdict == Verdict::Approve
                        && r.reviewer.id != self.requester.id
                });
                if !by.admin && !approver {
                    return Err(DomainError::Forbidden(
                        "only an admin or one of its approvers can revoke a request; the holder can end it early".into(),
                    ));
                }
                let reason = clean_text("reason", &reason, MAX_COMMENT)?;
                next.state = State::Revoked;
                next.reason = Some(reason.clone());
                event(
                    &next,
                    &by.principal.actor(),
                    "request.revoked",
                    by.channel,
                    None,
                    json!({ "reason": reason }),
                );
                // An action granted nothing: its attestation dies with the approval (consume
                // refuses it from now on), and there is nothing for a connector to take back.
                if self.action.is_none() {
                    next.revocation = Some(Revocation {
                        reason: RevokeReason::Revoked,
                        requested_at: now,
                        attempts: 0,
                        last_error: None,
                        done_at: None,
                    });
                    jobs.push(JobSpec {
                        kind: JobKind::Revoke,
                        request_id: self.id.clone(),
                        run_at: now,
                    });
                }
            }
            Action::End(by) => {
                if self.state != State::Active {
                    return Err(illegal(&Action::End(by)));
                }
                if by.principal.id != self.requester.id {
                    return Err(DomainError::Forbidden(
                        "only the holder can end a grant early; admins and approvers can revoke it"
                            .into(),
                    ));
                }
                next.state = State::Ended;
                if self.action.is_some() {
                    // Withdrawn before use: nothing was granted, nothing to take back.
                    next.reason = Some(format!("withdrawn by {} before use", by.principal.id));
                    event(
                        &next,
                        &by.principal.actor(),
                        "action.withdrawn",
                        by.channel,
                        None,
                        json!({}),
                    );
                } else {
                    next.reason = Some(format!("ended early by {}", by.principal.id));
                    next.revocation = Some(Revocation {
                        reason: RevokeReason::Ended,
                        requested_at: now,
                        attempts: 0,
                        last_error: None,
                        done_at: None,
                    });
                    event(
                        &next,
                        &by.principal.actor(),
                        "grant.ended",
                        by.channel,
                        None,
                        json!({}),
                    );
                    jobs.push(JobSpec {
                        kind: JobKind::Revoke,
                        request_id: self.id.clone(),
                        run_at: now,
                    });
                }
            }
            Action::RevokeSucceeded => {
                let Some(rev) = next.revocation.as_mut().filter(|r| r.done_at.is_none()) else {
                    return Err(illegal(&Action::RevokeSucceeded));
                };
                rev.done_at = Some(now);
                rev.last_error = None;
                let (reason, attempts) = (rev.reason, rev.attempts);
                event(
                    &next,
                    &system,
                    "grant.revoked",
                    Channel::System,
                    None,
                    json!({ "reason": reason, "failed_attempts": attempts }),
                );
            }
            Action::RevokeFailed { error } => {
                let Some(rev) = next.revocation.as_mut().filter(|r| r.done_at.is_none()) else {
                    return Err(illegal(&Action::RevokeFailed { error }));
                };
                rev.attempts += 1;
                rev.last_error = Some(error.clone());
                let attempts = rev.attempts;
                event(
                    &next,
                    &system,
                    "grant.revoke_failed",
                    Channel::System,
                    None,
                    json!({ "error": error, "attempts": attempts }),
                );
            }
            Action::Consume { by, channel } => {
                let Some(a) = next.action.as_mut() else {
                    return Err(DomainError::Forbidden(
                        "only an approved action can be consumed; this is an access request".into(),
                    ));
                };
                if let Some(at) = a.consumed_at {
                    return Err(DomainError::Unusable {
                        code: "already_consumed",
                        message: format!(
                            "this approval was already consumed at {}; an attestation is good for one use",
                            super::format_utc(at)
                        ),
                    });
                }
                let until = a.valid_until.unwrap_or(0);
                if self.state == State::Expired || (self.state == State::Active && now >= until) {
                    return Err(DomainError::Unusable {
                        code: "expired",
                        message: format!("this approval expired at {}", super::format_utc(until)),
                    });
                }
                if self.state != State::Active {
                    return Err(DomainError::Unusable {
                        code: "not_usable",
                        message: format!(
                            "this approval cannot be used: the action request is {}",
                            self.state
                        ),
                    });
                }
                a.consumed_at = Some(now);
                a.consumed_by = Some(by.clone());
                let digest = a.digest.clone();
                next.state = State::Ended;
                next.reason = Some("consumed".into());
                event(
                    &next,
                    &by,
                    "action.consumed",
                    channel,
                    None,
                    json!({ "digest": digest }),
                );
            }
        }
        Ok(Transition {
            request: next,
            events,
            jobs,
        })
    }
}

/// Seconds to milliseconds, saturating.
pub fn secs_to_ms(secs: u64) -> Millis {
    i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn principal(id: &str, groups: &[&str]) -> Principal {
        Principal {
            id: id.into(),
            email: None,
            name: None,
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    fn rules() -> EntitlementRules {
        EntitlementRules {
            id: "demo/x".into(),
            max_duration_secs: 3600,
            default_duration_secs: 600,
            requester_groups: vec!["eng".into()],
            requester_users: vec![],
            justification_pattern: Some(regex::Regex::new("^[A-Z]+-[0-9]+").expect("re")),
            ticket_required: false,
            pending_ttl_secs: 60,
            break_glass: false,
        }
    }

    fn new(j: &str) -> NewRequest {
        NewRequest {
            requester: principal("alice", &["eng"]),
            duration_secs: Some(1800),
            justification: j.into(),
            ticket: None,
            channel: Channel::Api,
        }
    }

    #[test]
    fn creation_validates() {
        let r = rules();
        assert!(Request::create("r1".into(), new("OPS-1 fix"), &r, 0).is_ok());
        let e = Request::create("r1".into(), new("fix it"), &r, 0).expect_err("pattern");
        assert_eq!(e.code(), "invalid_input");
        assert!(e.to_string().contains("pattern"), "{e}");
        let mut n = new("OPS-1");
        n.duration_secs = Some(7200);
        let e = Request::create("r1".into(), n, &r, 0).expect_err("too long");
        assert!(e.to_string().contains("maximum of 1h"), "{e}");
        let mut n = new("OPS-1");
        n.requester = principal("eve", &["sales"]);
        let e = Request::create("r1".into(), n, &r, 0).expect_err("not requestable");
        assert!(e.to_string().contains("group `eng`"), "{e}");
        let e = Request::create("r1".into(), new("  "), &r, 0).expect_err("empty");
        assert!(e.to_string().contains("must not be empty"), "{e}");
        let mut r2 = r.clone();
        r2.ticket_required = true;
        let e = Request::create("r1".into(), new("OPS-1 x"), &r2, 0).expect_err("ticket");
        assert!(e.to_string().contains("requires a ticket"), "{e}");
    }

    #[test]
    fn self_review_is_refused_without_break_glass() {
        let t = Request::create("r1".into(), new("OPS-1 x"), &rules(), 0).expect("create");
        let req = t.request;
        let t = req
            .apply(
                Action::Evaluated {
                    outcome: PolicyOutcome::Pending {
                        requirements: vec![Requirement {
                            name: "leads".into(),
                            users: vec![],
                            groups: vec!["eng".into()],
                            needed: 1,
                            approved_by: vec![],
                        }],
                    },
                    plugin: None,
                },
                1,
            )
            .expect("evaluated");
        let e = t
            .request
            .apply(
                Action::Review(Review {
                    reviewer: principal("alice", &["eng"]),
                    verdict: Verdict::Approve,
                    comment: None,
                    channel: Channel::Api,
                    at: 2,
                }),
                2,
            )
            .expect_err("self review");
        assert_eq!(e.code(), "self_review");
    }
}
