//! The host side of the `aws` capability: STS and IAM calls made with Sallyport's own AWS
//! credentials (the standard chain, or secrets named in the configuration), which plugins never
//! see. The plugin host checks every ARN against the plugin's manifest before calling here.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_iam::error::ProvideErrorMetadata;
use aws_sdk_sts::error::SdkError;
use serde_json::{Value, json};

use crate::config::AwsConfig;
use crate::secret::SecretStore;

/// STS will not issue credentials for less than this.
pub const MIN_SESSION_SECS: i64 = 900;
/// Every role's maximum session is at least this; it is also the most AWS allows when the caller
/// is itself a role session (role chaining).
const DEFAULT_ROLE_MAX_SECS: i64 = 3600;
const CHAINED_MAX_SECS: i32 = 3600;
/// How long a role's maximum session duration is remembered.
const ROLE_CACHE_TTL: Duration = Duration::from_secs(600);

/// Why an AWS call failed, in the capability's terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AwsError {
    /// Not configured.
    #[error("AWS is not configured on this Sallyport: {0}")]
    NotAvailable(String),
    /// Outside the grant or the grant's window.
    #[error("not allowed: {0}")]
    NotAllowed(String),
    /// AWS refused Sallyport's credentials.
    #[error("AWS refused: {0}")]
    AccessDenied(String),
    /// Missing entity.
    #[error("does not exist: {0}")]
    NoSuchEntity(String),
    /// Bad input.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Quota.
    #[error("AWS limit exceeded: {0}")]
    LimitExceeded(String),
    /// Still throttled after retries.
    #[error("AWS is throttling: {0}")]
    Throttled(String),
    /// Anything else.
    #[error("AWS call failed: {0}")]
    Failed(String),
}

/// Map an SDK error to a clear [`AwsError`].
fn classify<E, R>(what: &str, e: SdkError<E, R>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let (code, message) = match &e {
        SdkError::ServiceError(se) => (
            se.err().code().unwrap_or("").to_owned(),
            se.err()
                .message()
                .map_or_else(|| se.err().to_string(), str::to_owned),
        ),
        SdkError::TimeoutError(_) => ("Timeout".into(), "the call timed out".into()),
        SdkError::DispatchFailure(_) => (
            "Dispatch".into(),
            format!("cannot reach AWS: {}", root_cause(&e)),
        ),
        other => ("".into(), root_cause(other)),
    };
    if matches!(code.as_str(), "" | "Dispatch") && mentions_credentials(&e) {
        return AwsError::AccessDenied(format!(
            "{what}: Sallyport has no usable AWS credentials ({message}); set [aws] access_key_id_secret and secret_access_key_secret, or give the server an identity through the standard chain (environment, profile, web identity, container or instance role)"
        ));
    }
    let m = format!(
        "{what}: {message}{}",
        if code.is_empty() {
            String::new()
        } else {
            format!(" ({code})")
        }
    );
    match code.as_str() {
        "AccessDenied"
        | "AccessDeniedException"
        | "UnauthorizedOperation"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "ExpiredToken" => AwsError::AccessDenied(m),
        "NoSuchEntity" | "NoSuchEntityException" => AwsError::NoSuchEntity(m),
        "MalformedPolicyDocument"
        | "InvalidInput"
        | "ValidationError"
        | "InvalidParameterValue"
        | "PackedPolicyTooLarge"
        | "RegionDisabledException" => AwsError::InvalidInput(m),
        "LimitExceeded" | "LimitExceededException" => AwsError::LimitExceeded(m),
        "Throttling"
        | "ThrottlingException"
        | "RequestLimitExceeded"
        | "TooManyRequestsException" => AwsError::Throttled(m),
        _ => AwsError::Failed(m),
    }
}

/// Does any error in the chain say that credentials could not be loaded?
fn mentions_credentials(e: &dyn std::error::Error) -> bool {
    let mut cur = Some(e);
    while let Some(x) = cur {
        let text = x.to_string().to_ascii_lowercase();
        if text.contains("credentials") || text.contains("no matching auth scheme") {
            return true;
        }
        cur = x.source();
    }
    false
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Who and what a call serves (from the plugin call in progress).
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// The requester.
    pub requester: String,
    /// The request id.
    pub request_id: String,
    /// The entitlement.
    pub entitlement: String,
    /// When the grant ends (ms), for credentials.
    pub grant_end_ms: Option<i64>,
    /// Now (ms).
    pub now_ms: i64,
}

/// Input to [`AwsCloud::assume_role`].
#[derive(Debug, Clone, Default)]
pub struct AssumeRole {
    /// Role ARN.
    pub role_arn: String,
    /// Wanted lifetime.
    pub duration_secs: Option<u32>,
    /// The plugin's session policy (JSON).
    pub session_policy: Option<String>,
    /// Managed session policies.
    pub policy_arns: Vec<String>,
    /// Extra tags.
    pub tags: Vec<(String, String)>,
}

/// Minted credentials (secret: never logged or stored).
#[derive(Clone)]
pub struct MintedCredentials {
    /// Key id.
    pub access_key_id: String,
    /// Secret key.
    pub secret_access_key: String,
    /// Session token.
    pub session_token: String,
    /// When they stop working: STS's expiration or the grant's end, whichever is first.
    pub expiration_ms: i64,
    /// STS's own expiration (the session policy ends permissions earlier when the grant does).
    pub sts_expiration_ms: i64,
    /// The `DurationSeconds` that was asked.
    pub duration_secs: i32,
}

impl std::fmt::Debug for MintedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("expiration_ms", &self.expiration_ms)
            .finish_non_exhaustive()
    }
}

/// Which IAM identity a policy call targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IamTarget {
    /// A role ARN.
    Role(String),
    /// A user ARN.
    User(String),
    /// A group ARN.
    Group(String),
}

impl IamTarget {
    /// The ARN.
    pub fn arn(&self) -> &str {
        match self {
            IamTarget::Role(a) | IamTarget::User(a) | IamTarget::Group(a) => a,
        }
    }
}

/// The entity name at the end of an IAM ARN (`arn:aws:iam::1:role/path/name` -> `name`),
/// checking the ARN's kind.
pub fn iam_name(arn: &str, kind: &str) -> Result<String, AwsError> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ok = parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "iam"
        && parts[4].len() == 12
        && parts[4].chars().all(|c| c.is_ascii_digit());
    let resource = parts.get(5).copied().unwrap_or("");
    let Some(rest) = resource.strip_prefix(&format!("{kind}/")).filter(|_| ok) else {
        return Err(AwsError::InvalidInput(format!(
            "`{arn}` is not an IAM {kind} ARN (arn:aws:iam::123456789012:{kind}/NAME)"
        )));
    };
    let name = rest.rsplit('/').next().unwrap_or(rest);
    if name.is_empty() {
        return Err(AwsError::InvalidInput(format!("`{arn}` names no {kind}")));
    }
    Ok(name.to_owned())
}

/// Characters STS allows in session names and source identities: `[\w+=,.@-]`.
fn sts_name(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    out.truncate(max);
    out
}

/// What a plugin may write as an inline policy. During a grant (`grant_end` known) every Allow
/// must carry `DateLessThan aws:CurrentTime` no later than the grant's end, so access written by
/// any connector stops on time even if Sallyport is down; outside a grant (a revoke) only Deny
/// statements may be written. The host enforces it for every connector, not only the built-ins.
pub fn check_inline_policy(doc: &str, grant_end: Option<i64>) -> Result<(), AwsError> {
    let v: Value = serde_json::from_str(doc)
        .map_err(|e| AwsError::InvalidInput(format!("the policy is not JSON: {e}")))?;
    let statements = match v.get("Statement") {
        Some(Value::Array(a)) => a.iter().collect::<Vec<_>>(),
        Some(o @ Value::Object(_)) => vec![o],
        _ => return Err(AwsError::InvalidInput("the policy has no Statement".into())),
    };
    for (i, st) in statements.iter().enumerate() {
        match st.get("Effect").and_then(Value::as_str) {
            Some("Deny") => continue,
            Some("Allow") => {}
            _ => {
                return Err(AwsError::InvalidInput(format!(
                    "Statement[{i}]: Effect must be Allow or Deny"
                )));
            }
        }
        let Some(end) = grant_end else {
            return Err(AwsError::NotAllowed(format!(
                "Statement[{i}]: outside a grant only Deny statements may be written"
            )));
        };
        let ends = st
            .pointer("/Condition/DateLessThan/aws:CurrentTime")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(|t| t.as_millisecond());
        if ends.is_none_or(|t| t > end) {
            return Err(AwsError::NotAllowed(format!(
                "Statement[{i}]: every Allow written during a grant needs Condition.DateLessThan[\"aws:CurrentTime\"] no later than the grant's end ({})",
                rfc3339(end)
            )));
        }
    }
    Ok(())
}

/// An ARN whose name IAM resolves to another entity (another path, or another account).
fn unreachable_entity(arn: &str, kind: &str, name: &str, actual: &str) -> AwsError {
    AwsError::InvalidInput(format!(
        "`{arn}` does not name an entity Sallyport can reach: the {kind} called `{name}` in its account is `{actual}` (Sallyport manages roles, users and groups of its own account only)"
    ))
}

/// `sp-<requester>-<last part of the request id>`, at most 64 characters: a long requester id is
/// shortened, never the request's part, so CloudTrail always leads back to the request.
fn session_name(requester: &str, request_id: &str) -> String {
    let request = sts_name(request_id.rsplit('-').next().unwrap_or(request_id), 40);
    let room = 64 - "sp--".len() - request.len();
    format!("sp-{}-{request}", sts_name(requester, room))
}

/// The requester as STS's source identity (2 to 64 characters).
fn source_identity(requester: &str) -> String {
    let id = sts_name(requester, 64);
    if id.len() < 2 {
        format!("user-{id}")
    } else {
        id
    }
}

/// Characters session tag values allow.
fn tag_value(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == ' ' || "_.:/=+-@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    out.truncate(256);
    out
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// The session policy Sallyport sends: the plugin's (if any), always bounded by the grant's end.
///
/// Session policies only narrow, and an Allow in any of them counts: so the "allow everything
/// until the end" statement is sent only when nothing else narrows the session. With managed
/// session policies (`with_managed`) and no inline one, the inline policy is the end's Deny
/// alone, so the managed policies stay the limit. The Deny from the end on is always there.
pub fn window_session_policy(
    plugin_policy: Option<&str>,
    with_managed: bool,
    end_ms: i64,
) -> Result<String, AwsError> {
    let end = rfc3339(end_ms);
    let mut doc = match plugin_policy {
        None if with_managed => json!({ "Version": "2012-10-17", "Statement": [] }),
        // Nothing narrows the session: the role's permissions until the end (and the Deny below
        // from the end on, which also holds against resource policies naming the session).
        None => json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": "SallyportGrantWindow",
                "Effect": "Allow",
                "Action": "*",
                "Resource": "*",
                "Condition": { "DateLessThan": { "aws:CurrentTime": end } }
            }]
        }),
        Some(p) => serde_json::from_str::<Value>(p)
            .map_err(|e| AwsError::InvalidInput(format!("session policy is not JSON: {e}")))?,
    };
    let statements = match doc.get_mut("Statement") {
        Some(Value::Array(a)) => a,
        Some(s @ Value::Object(_)) => {
            let one = s.take();
            *s = Value::Array(vec![one]);
            s.as_array_mut()
                .ok_or_else(|| AwsError::InvalidInput("Statement".into()))?
        }
        _ => {
            return Err(AwsError::InvalidInput(
                "session policy needs a Statement".into(),
            ));
        }
    };
    statements.push(json!({
        "Sid": "SallyportGrantEnd",
        "Effect": "Deny",
        "Action": "*",
        "Resource": "*",
        "Condition": { "DateGreaterThanEquals": { "aws:CurrentTime": end } }
    }));
    Ok(doc.to_string())
}

/// Sallyport's AWS clients.
pub struct AwsCloud {
    sts: aws_sdk_sts::Client,
    iam: aws_sdk_iam::Client,
    role_max: Mutex<HashMap<String, (i64, Instant)>>,
}

impl std::fmt::Debug for AwsCloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCloud").finish_non_exhaustive()
    }
}

impl AwsCloud {
    /// Build the clients: credentials from the named secrets, or the standard chain.
    pub async fn new(cfg: &AwsConfig, secrets: &SecretStore) -> Result<AwsCloud, String> {
        use aws_config::retry::RetryConfig;
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).retry_config(
            RetryConfig::standard()
                .with_max_attempts(cfg.max_attempts)
                .with_initial_backoff(Duration::from_millis(200)),
        );
        if let Some(r) = &cfg.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        if let Some(u) = &cfg.endpoint_url {
            loader = loader.endpoint_url(u.clone());
        }
        if let Some(key_name) = &cfg.access_key_id_secret {
            let get = |n: &str| {
                secrets
                    .get(n)
                    .map(|s| s.expose().to_owned())
                    .ok_or_else(|| format!("aws: secret `{n}` is not defined"))
            };
            let key = get(key_name)?;
            let secret = get(cfg.secret_access_key_secret.as_deref().unwrap_or(""))?;
            let token = match &cfg.session_token_secret {
                Some(n) => Some(get(n)?),
                None => None,
            };
            loader = loader.credentials_provider(aws_sdk_sts::config::Credentials::new(
                key,
                secret,
                token,
                None,
                "sallyport-config",
            ));
        }
        let shared = loader.load().await;
        if shared.region().is_none() {
            return Err(
                "aws: no region: set [aws] region, or AWS_REGION, or a profile with a region"
                    .into(),
            );
        }
        Ok(AwsCloud {
            sts: aws_sdk_sts::Client::new(&shared),
            iam: aws_sdk_iam::Client::new(&shared),
            role_max: Mutex::new(HashMap::new()),
        })
    }

    /// A role's maximum session duration (cached for a while).
    async fn role_max_secs(&self, role_arn: &str) -> Result<i64, AwsError> {
        if let Some((v, at)) = self
            .role_max
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(role_arn)
            && at.elapsed() < ROLE_CACHE_TTL
        {
            return Ok(*v);
        }
        // The same check as before any IAM change: the role must be exactly this ARN in
        // Sallyport's account, or the early revoke's deny could never be written on it. So a
        // grant that could not be revoked fails at once instead of minting.
        let (_, max) = self.checked_entity(role_arn, "role").await?;
        let max = max.unwrap_or(DEFAULT_ROLE_MAX_SECS);
        self.role_max
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(role_arn.to_owned(), (max, Instant::now()));
        Ok(max)
    }

    /// The name of the entity an ARN names, after checking with IAM that the ARN is exactly that
    /// entity's: IAM calls take a bare name, so without this check an ARN of another account or
    /// another path (which an allow-list pattern may admit) would act on the entity of the same
    /// name in Sallyport's account.
    async fn entity_name(&self, arn: &str, kind: &str) -> Result<String, AwsError> {
        Ok(self.checked_entity(arn, kind).await?.0)
    }

    /// Read a role, user or group by name and check that its ARN is exactly `arn`; returns the
    /// name and, for a role, its maximum session duration.
    async fn checked_entity(
        &self,
        arn: &str,
        kind: &str,
    ) -> Result<(String, Option<i64>), AwsError> {
        let name = iam_name(arn, kind)?;
        let permission = match kind {
            "role" => "iam:GetRole",
            "user" => "iam:GetUser",
            _ => "iam:GetGroup",
        };
        let what = format!("reading {kind} {arn} (Sallyport needs {permission} on it)");
        let found = match kind {
            "role" => self
                .iam
                .get_role()
                .role_name(&name)
                .send()
                .await
                .map_err(|e| classify(&what, e))?
                .role()
                .map(|r| (r.arn().to_owned(), r.max_session_duration().map(i64::from))),
            "user" => self
                .iam
                .get_user()
                .user_name(&name)
                .send()
                .await
                .map_err(|e| classify(&what, e))?
                .user()
                .map(|u| (u.arn().to_owned(), None)),
            _ => self
                .iam
                .get_group()
                .group_name(&name)
                .send()
                .await
                .map_err(|e| classify(&what, e))?
                .group()
                .map(|g| (g.arn().to_owned(), None)),
        };
        match found {
            Some((a, max)) if a == arn => Ok((name, max)),
            Some((a, _)) => Err(unreachable_entity(arn, kind, &name, &a)),
            None => Err(AwsError::Failed(format!("{what}: IAM answered without it"))),
        }
    }

    /// Mint credentials for a role, within the grant's window.
    pub async fn assume_role(
        &self,
        ctx: &CallContext,
        req: &AssumeRole,
    ) -> Result<MintedCredentials, AwsError> {
        let Some(end) = ctx.grant_end_ms else {
            return Err(AwsError::NotAllowed(
                "assume-role is only available while serving a grant".into(),
            ));
        };
        let left_secs = (end - ctx.now_ms) / 1000;
        if left_secs <= 0 {
            return Err(AwsError::NotAllowed(format!(
                "the grant ended at {}",
                rfc3339(end)
            )));
        }
        let role_max = self.role_max_secs(&req.role_arn).await?;
        // [900 s, role maximum], and not past the grant's end (the session policy cuts a 900 s
        // minimum short when less is left).
        let wanted = req.duration_secs.map_or(role_max, i64::from);
        let duration = wanted.min(role_max).min(left_secs).max(MIN_SESSION_SECS);
        let duration = i32::try_from(duration).unwrap_or(i32::MAX);
        let policy = window_session_policy(
            req.session_policy.as_deref(),
            !req.policy_arns.is_empty(),
            end,
        )?;
        let session_name = session_name(&ctx.requester, &ctx.request_id);
        let mut call = self
            .sts
            .assume_role()
            .role_arn(&req.role_arn)
            .role_session_name(session_name)
            .duration_seconds(duration)
            .policy(policy)
            .source_identity(source_identity(&ctx.requester));
        for arn in &req.policy_arns {
            call = call.policy_arns(
                aws_sdk_sts::types::PolicyDescriptorType::builder()
                    .arn(arn)
                    .build(),
            );
        }
        let mut tags: Vec<(String, String)> = vec![
            ("sallyport-requester".into(), tag_value(&ctx.requester)),
            ("sallyport-request".into(), tag_value(&ctx.request_id)),
            ("sallyport-entitlement".into(), tag_value(&ctx.entitlement)),
        ];
        for (k, v) in &req.tags {
            if k.to_ascii_lowercase().starts_with("sallyport-") {
                return Err(AwsError::InvalidInput(format!(
                    "tag `{k}`: the sallyport- prefix is reserved"
                )));
            }
            tags.push((k.clone(), tag_value(v)));
        }
        // Sessions this one chains into keep Sallyport's tags, so an early revoke's deny (which
        // matches `sallyport-request`) reaches them too.
        for k in [
            "sallyport-requester",
            "sallyport-request",
            "sallyport-entitlement",
        ] {
            call = call.transitive_tag_keys(k);
        }
        for (k, v) in tags {
            let tag = aws_sdk_sts::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| AwsError::InvalidInput(e.to_string()))?;
            call = call.tags(tag);
        }
        let what = format!("assuming {}", req.role_arn);
        let (out, duration) = match call.clone().send().await {
            Ok(out) => (out, duration),
            Err(e) => match classify(&what, e) {
                // Sallyport itself runs as a role session: AWS caps chained sessions at an hour.
                AwsError::InvalidInput(m)
                    if m.contains("role chaining") && duration > CHAINED_MAX_SECS =>
                {
                    tracing::info!(role = %req.role_arn, "role chaining: sessions are capped at 1 hour");
                    let d = CHAINED_MAX_SECS;
                    let out = call
                        .duration_seconds(d)
                        .send()
                        .await
                        .map_err(|e| classify(&what, e))?;
                    (out, d)
                }
                other => return Err(other),
            },
        };
        let c = out
            .credentials()
            .ok_or_else(|| AwsError::Failed("STS answered without credentials".into()))?;
        let sts_expiration_ms = c
            .expiration()
            .to_millis()
            .map_err(|e| AwsError::Failed(format!("STS expiration: {e}")))?;
        Ok(MintedCredentials {
            access_key_id: c.access_key_id().to_owned(),
            secret_access_key: c.secret_access_key().to_owned(),
            session_token: c.session_token().to_owned(),
            expiration_ms: sts_expiration_ms.min(end),
            sts_expiration_ms,
            duration_secs: duration,
        })
    }

    /// Create or replace an inline policy.
    pub async fn put_inline_policy(
        &self,
        target: &IamTarget,
        name: &str,
        document: &str,
    ) -> Result<(), AwsError> {
        let what = format!("putting policy {name} on {}", target.arn());
        match target {
            IamTarget::Role(a) => self
                .iam
                .put_role_policy()
                .role_name(self.entity_name(a, "role").await?)
                .policy_name(name)
                .policy_document(document)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(&what, e)),
            IamTarget::User(a) => self
                .iam
                .put_user_policy()
                .user_name(self.entity_name(a, "user").await?)
                .policy_name(name)
                .policy_document(document)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(&what, e)),
            IamTarget::Group(a) => self
                .iam
                .put_group_policy()
                .group_name(self.entity_name(a, "group").await?)
                .policy_name(name)
                .policy_document(document)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(&what, e)),
        }
    }

    /// Delete an inline policy.
    pub async fn delete_inline_policy(
        &self,
        target: &IamTarget,
        name: &str,
    ) -> Result<(), AwsError> {
        let what = format!("deleting policy {name} from {}", target.arn());
        match target {
            IamTarget::Role(a) => self
                .iam
                .delete_role_policy()
                .role_name(self.entity_name(a, "role").await?)
                .policy_name(name)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(&what, e)),
            IamTarget::User(a) => self
                .iam
                .delete_user_policy()
                .user_name(self.entity_name(a, "user").await?)
                .policy_name(name)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(&what, e)),
            IamTarget::Group(a) => self
                .iam
                .delete_group_policy()
                .group_name(self.entity_name(a, "group").await?)
                .policy_name(name)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(&what, e)),
        }
    }

    /// Attach a managed policy.
    pub async fn attach_policy(
        &self,
        target: &IamTarget,
        policy_arn: &str,
    ) -> Result<(), AwsError> {
        let what = format!("attaching {policy_arn} to {}", target.arn());
        match target {
            IamTarget::Role(a) => self
                .iam
                .attach_role_policy()
                .role_name(self.entity_name(a, "role").await?)
                .policy_arn(policy_arn)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(&what, e)),
            IamTarget::User(a) => self
                .iam
                .attach_user_policy()
                .user_name(self.entity_name(a, "user").await?)
                .policy_arn(policy_arn)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(&what, e)),
            IamTarget::Group(a) => self
                .iam
                .attach_group_policy()
                .group_name(self.entity_name(a, "group").await?)
                .policy_arn(policy_arn)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(&what, e)),
        }
    }

    /// Detach a managed policy.
    pub async fn detach_policy(
        &self,
        target: &IamTarget,
        policy_arn: &str,
    ) -> Result<(), AwsError> {
        let what = format!("detaching {policy_arn} from {}", target.arn());
        match target {
            IamTarget::Role(a) => self
                .iam
                .detach_role_policy()
                .role_name(self.entity_name(a, "role").await?)
                .policy_arn(policy_arn)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(&what, e)),
            IamTarget::User(a) => self
                .iam
                .detach_user_policy()
                .user_name(self.entity_name(a, "user").await?)
                .policy_arn(policy_arn)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(&what, e)),
            IamTarget::Group(a) => self
                .iam
                .detach_group_policy()
                .group_name(self.entity_name(a, "group").await?)
                .policy_arn(policy_arn)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(&what, e)),
        }
    }

    /// Add a user to a group.
    pub async fn add_user_to_group(&self, user_arn: &str, group_arn: &str) -> Result<(), AwsError> {
        self.iam
            .add_user_to_group()
            .user_name(self.entity_name(user_arn, "user").await?)
            .group_name(self.entity_name(group_arn, "group").await?)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(&format!("adding {user_arn} to {group_arn}"), e))
    }

    /// Remove a user from a group.
    pub async fn remove_user_from_group(
        &self,
        user_arn: &str,
        group_arn: &str,
    ) -> Result<(), AwsError> {
        self.iam
            .remove_user_from_group()
            .user_name(self.entity_name(user_arn, "user").await?)
            .group_name(self.entity_name(group_arn, "group").await?)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(&format!("removing {user_arn} from {group_arn}"), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_arns() {
        assert_eq!(
            iam_name("arn:aws:iam::123456789012:role/ops/admin", "role"),
            Ok("admin".into())
        );
        assert!(iam_name("arn:aws:iam::123456789012:user/x", "role").is_err());
        assert!(iam_name("arn:aws:s3:::bucket", "role").is_err());
        assert!(iam_name("arn:aws:iam::12:role/x", "role").is_err());
        assert_eq!(
            sts_name("alice@example.com/x y", 64),
            "alice@example.com-x-y"
        );
        let long = "a".repeat(100);
        let name = session_name(&long, "01a2-7bcd-d63b2b877b03");
        assert_eq!(name.len(), 64);
        assert!(
            name.starts_with("sp-aaa") && name.ends_with("-d63b2b877b03"),
            "{name}"
        );
        assert_eq!(session_name("bob", "x-y-z"), "sp-bob-z");
        assert_eq!(source_identity("q"), "user-q");
        assert_eq!(source_identity("bo"), "bo");
    }

    #[test]
    fn inline_policies_end_with_the_grant() {
        let end = 1_800_000_000_000;
        let allow = |t: &str| {
            format!(
                r#"{{"Statement":[{{"Effect":"Allow","Action":"s3:*","Resource":"*","Condition":{{"DateLessThan":{{"aws:CurrentTime":"{t}"}}}}}}]}}"#
            )
        };
        assert_eq!(
            check_inline_policy(&allow("2027-01-15T08:00:00Z"), Some(end)),
            Ok(())
        );
        assert_eq!(
            check_inline_policy(&allow("2027-01-15T07:00:00Z"), Some(end)),
            Ok(())
        );
        assert!(matches!(
            check_inline_policy(&allow("2027-01-15T08:00:01Z"), Some(end)),
            Err(AwsError::NotAllowed(_))
        ));
        assert!(matches!(
            check_inline_policy(&allow("1900000000"), Some(end)),
            Err(AwsError::NotAllowed(_))
        ));
        let open = r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}"#;
        assert!(matches!(
            check_inline_policy(open, Some(end)),
            Err(AwsError::NotAllowed(_))
        ));
        let deny = r#"{"Statement":[{"Effect":"Deny","Action":"*","Resource":"*"}]}"#;
        assert_eq!(check_inline_policy(deny, None), Ok(()));
        assert_eq!(check_inline_policy(deny, Some(end)), Ok(()));
        assert!(matches!(
            check_inline_policy(&allow("2027-01-15T08:00:00Z"), None),
            Err(AwsError::NotAllowed(_))
        ));
        assert!(check_inline_policy("{}", Some(end)).is_err());
    }

    #[test]
    fn session_policy_always_ends_at_the_grant() {
        let end = 1_800_000_000_000;
        let doc = |mine: Option<&str>, managed: bool| -> Value {
            serde_json::from_str(&window_session_policy(mine, managed, end).expect("policy"))
                .expect("json")
        };
        // Nothing narrows the session: allow (the role's permissions) until the end.
        let p = doc(None, false);
        assert_eq!(p["Statement"].as_array().map(Vec::len), Some(2));
        assert_eq!(p["Statement"][0]["Effect"], "Allow");
        assert_eq!(p["Statement"][1]["Effect"], "Deny");
        assert_eq!(
            p["Statement"][0]["Condition"]["DateLessThan"]["aws:CurrentTime"],
            "2027-01-15T08:00:00Z"
        );
        // Managed session policies narrow it: no Allow of ours may widen them again.
        let p = doc(None, true);
        let statements = p["Statement"].as_array().cloned().unwrap_or_default();
        assert_eq!(statements.len(), 1);
        assert_eq!(statements[0]["Effect"], "Deny");
        assert_eq!(
            statements[0]["Condition"]["DateGreaterThanEquals"]["aws:CurrentTime"],
            "2027-01-15T08:00:00Z"
        );
        let mine = r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}}"#;
        for managed in [false, true] {
            let p = doc(Some(mine), managed);
            let statements = p["Statement"].as_array().cloned().unwrap_or_default();
            assert_eq!(statements.len(), 2);
            assert_eq!(statements[0]["Action"], "s3:GetObject");
            assert_eq!(statements[1]["Effect"], "Deny");
            assert!(
                !statements
                    .iter()
                    .any(|s| s["Effect"] == "Allow" && s["Action"] == "*"),
                "never an Allow of everything beside a narrower policy"
            );
        }
        assert!(window_session_policy(Some("{}"), false, end).is_err());
    }
}
