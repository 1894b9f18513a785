//! Action requests: filing them (people and pipelines), the pipeline's wait token, signing
//! attestations, consuming them once, and the published keys.

use serde_json::{Map, Value, json};

use super::{CAS_ATTEMPTS, Caller, Service, ServiceError, now_ms};
use crate::domain::{
    Action, ActionDetails, Channel, NewRequest, Request, Workload, canonical_parameters, digest,
};
use crate::store::{TokenScope, WriteCtx};
use crate::workload::WorkloadError;

/// What a requester (person or pipeline) asks.
#[derive(Debug, Clone)]
pub struct ActionInput {
    /// The action kind, e.g. `deploy/production`.
    pub kind: String,
    /// Its parameters, as given (strings are converted to the schema's types).
    pub parameters: Map<String, Value>,
    /// Why.
    pub justification: String,
}

/// An action request as its requester sees it: the request, and its attestation once
/// approved.
#[derive(Debug, Clone)]
pub struct ActionView {
    /// The request.
    pub request: Request,
    /// The signed attestation, when the approval is usable and the caller asked for it.
    pub attestation: Option<String>,
}

impl From<WorkloadError> for ServiceError {
    fn from(e: WorkloadError) -> Self {
        match e {
            WorkloadError::Invalid(_) => ServiceError::Unauthenticated(e.to_string()),
            WorkloadError::NotAllowed(m) => ServiceError::Forbidden(m),
            WorkloadError::Unavailable(_) => ServiceError::Unavailable(e.to_string()),
        }
    }
}

impl Service {
    /// A pipeline's workload token, checked for action kind `kind`.
    pub async fn authenticate_workload(
        &self,
        token: &str,
        kind: &str,
    ) -> Result<(Caller, Workload), ServiceError> {
        let policy = self.policy();
        let k = policy.action(kind).ok_or_else(|| no_kind(kind))?;
        let (principal, workload) = self.inner.workload.verify(token, k).await.inspect_err(
            |e| tracing::warn!(action = %kind, error = %e, "workload token refused"),
        )?;
        Ok((
            Caller {
                principal,
                roles: Default::default(),
                token_id: None,
            },
            workload,
        ))
    }

    /// File an action request. A pipeline (`workload` set) was admitted by its workload
    /// identity; a person or service token by the kind's requester groups and users.
    pub async fn create_action(
        &self,
        caller: &Caller,
        workload: Option<Workload>,
        input: ActionInput,
        channel: Channel,
        ctx: &WriteCtx,
    ) -> Result<Request, ServiceError> {
        let policy = self.policy();
        let kind = policy
            .action(&input.kind)
            .ok_or_else(|| no_kind(&input.kind))?;
        let mut rules = kind.rules.clone();
        if workload.is_some() {
            // The pipeline rule admitted it; people rules do not apply to pipelines.
            rules.requester_groups.clear();
            rules.requester_users = vec![caller.principal.id.clone()];
        }
        let parameters = canonical_parameters(&input.kind, &kind.parameters, &input.parameters)?;
        let details = ActionDetails {
            digest: digest(&parameters),
            parameters,
            workload,
            approved_at: None,
            valid_until: None,
            consumed_at: None,
            consumed_by: None,
        };
        let now = now_ms();
        let created = Request::create_action(
            uuid::Uuid::now_v7().to_string(),
            NewRequest {
                requester: caller.principal.clone(),
                duration_secs: None,
                justification: input.justification,
                ticket: None,
                channel,
            },
            details,
            &rules,
            now,
        )?;
        self.file(&policy, created, now, ctx).await
    }

    /// A token that lets the pipeline read this one request until it can no longer be used
    /// (its workload token may expire long before the reviewers answer).
    pub async fn issue_wait_token(
        &self,
        r: &Request,
        ctx: &WriteCtx,
    ) -> Result<String, ServiceError> {
        let ttl_ms = (r.pending_until - now_ms()).max(0)
            + crate::domain::secs_to_ms(r.duration_secs)
            + 60_000;
        let ttl = u64::try_from(ttl_ms / 1000).unwrap_or(0);
        let (token, _) = self
            .issue_scoped_token(
                &r.requester,
                &r.id,
                ttl,
                TokenScope::Action,
                Channel::Api,
                ctx,
            )
            .await?;
        Ok(token)
    }

    /// The caller behind a wait token, if it is for request `id`.
    pub async fn authenticate_wait(&self, token: &str, id: &str) -> Result<Caller, ServiceError> {
        let rec = self
            .live_token(token, TokenScope::Action)
            .await?
            .filter(|rec| rec.name == id)
            .ok_or_else(|| {
                ServiceError::Unauthenticated(
                    "invalid or expired token for this action request".into(),
                )
            })?;
        Ok(Caller {
            principal: rec.principal,
            roles: Default::default(),
            token_id: Some(rec.id),
        })
    }

    /// An action request the caller may see, with its attestation when the caller is its
    /// requester and the approval is usable now. `issuer` is the server's public URL.
    pub async fn get_action(
        &self,
        caller: &Caller,
        id: &str,
        issuer: &str,
        pipeline: bool,
    ) -> Result<ActionView, ServiceError> {
        let r = self.get(caller, id).await?;
        if r.action.is_none() {
            return Err(ServiceError::NotFound(format!(
                "`{id}` is an access request, not an action request"
            )));
        }
        self.action_view(caller, r, issuer, pipeline).await
    }

    /// An action request as `caller` sees it: with its attestation when the caller is its
    /// requester and the approval is usable now.
    pub async fn action_view(
        &self,
        caller: &Caller,
        r: Request,
        issuer: &str,
        pipeline: bool,
    ) -> Result<ActionView, ServiceError> {
        // Only to its requester, and a pipeline's only through its wait token (so no person
        // whose id happens to look like a pipeline's can fetch it).
        let own = r.requester.id == caller.principal.id
            && r.action
                .as_ref()
                .is_some_and(|a| a.workload.is_some() == pipeline);
        let attestation = if own && r.action_usable_at(now_ms()) {
            Some(self.sign_attestation(&r, issuer).await?)
        } else {
            None
        };
        Ok(ActionView {
            request: r,
            attestation,
        })
    }

    async fn sign_attestation(&self, r: &Request, issuer: &str) -> Result<String, ServiceError> {
        let policy = self.policy();
        let att = policy.attestor().ok_or_else(|| {
            ServiceError::Unavailable("no attestation signing key is configured".into())
        })?;
        let claims = crate::attest::claims(r, issuer)
            .ok_or_else(|| ServiceError::NotFound("this action is not approved".into()))?;
        let until = r.action.as_ref().and_then(|a| a.valid_until).unwrap_or(0);
        let key = att.current();
        // Published (at least) until this token expires, whatever happens to the config.
        self.inner
            .store
            .note_attestation_key(key.kid(), key.jwk(), until)
            .await?;
        Ok(att.sign(&claims))
    }

    /// Use an approval once. The attestation is the authority: whoever holds it may consume
    /// it, once, before it expires. With `parameters`, they must be the approved ones.
    pub async fn consume(
        &self,
        id: &str,
        attestation: &str,
        parameters: Map<String, Value>,
        by: Option<&Caller>,
        ctx: &WriteCtx,
    ) -> Result<Request, ServiceError> {
        let policy = self.policy();
        let att = policy.attestor().ok_or_else(|| {
            ServiceError::Unavailable("no attestation signing key is configured".into())
        })?;
        // Keys no longer configured count only until a day after the last token they signed
        // expired (so an expired token is told it expired), and a withdrawn key never.
        let withdrawn = &policy.config.attestation.withdrawn_keys;
        let retired: Vec<(String, Value)> = self
            .inner
            .store
            .attestation_keys(now_ms().saturating_sub(86_400_000))
            .await?
            .into_iter()
            .filter(|(kid, _)| !withdrawn.contains(kid))
            .collect();
        let claims = att
            .verify(attestation.trim(), &retired)
            .map_err(ServiceError::Unauthenticated)?;
        if claims["jti"].as_str() != Some(id) {
            return Err(ServiceError::Invalid {
                field: "attestation".into(),
                message: format!(
                    "this attestation is for action request `{}`, not `{id}`",
                    claims["jti"].as_str().unwrap_or("?")
                ),
            });
        }
        let actor = by.map_or_else(|| format!("attestation:{id}"), |c| c.principal.actor());
        for _ in 0..CAS_ATTEMPTS {
            let r = self
                .inner
                .store
                .get_request(id)
                .await?
                .ok_or_else(|| ServiceError::NotFound(format!("no action request `{id}`")))?;
            let Some(a) = &r.action else {
                return Err(ServiceError::NotFound(format!("no action request `{id}`")));
            };
            if claims["params_digest"].as_str() != Some(a.digest.as_str()) {
                return Err(ServiceError::DigestMismatch(
                    "the attestation's digest is not the approved one".into(),
                ));
            }
            let canonical = match policy.action(&r.entitlement) {
                Some(k) => canonical_parameters(&r.entitlement, &k.parameters, &parameters)
                    .map_err(|e| {
                        ServiceError::DigestMismatch(format!(
                            "the parameters are not the approved ones: {e}"
                        ))
                    })?,
                None => parameters.clone(),
            };
            let d = digest(&canonical);
            if d != a.digest {
                tracing::warn!(request = %id, approved = %a.digest, given = %d, "consume refused: parameters differ");
                return Err(ServiceError::DigestMismatch(format!(
                    "the parameters are not the approved ones: approved {}, given {d}",
                    a.digest
                )));
            }
            let now = now_ms();
            let t = r.apply(
                Action::Consume {
                    by: actor.clone(),
                    channel: Channel::Api,
                },
                now,
            )?;
            if let Some(out) = self.commit(t, ctx).await? {
                return Ok(out);
            }
        }
        Err(ServiceError::Conflict)
    }

    /// The JWKS: every configured key, and every key that signed a token still valid.
    pub async fn jwks(&self) -> Result<Value, ServiceError> {
        let policy = self.policy();
        let mut keys: Vec<Value> = Vec::new();
        let mut kids: Vec<String> = Vec::new();
        if let Some(att) = policy.attestor() {
            for k in att.keys() {
                kids.push(k.kid().to_owned());
                keys.push(k.jwk().clone());
            }
        }
        for (kid, jwk) in self.inner.store.attestation_keys(now_ms()).await? {
            if !kids.contains(&kid) && !policy.config.attestation.withdrawn_keys.contains(&kid) {
                kids.push(kid);
                keys.push(jwk);
            }
        }
        Ok(json!({ "keys": keys }))
    }
}

fn no_kind(kind: &str) -> ServiceError {
    ServiceError::NotFound(format!(
        "no action kind `{kind}`; `GET /api/v1/actions/kinds` lists them"
    ))
}
