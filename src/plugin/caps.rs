//! Host capabilities offered to plugins: `log`, `http`, `aws` and `azure` (the last two answer
//! `capability-not-available` when Sallyport has no `[aws]` or `[azure]` configured).
//!
//! Each capability re-checks its grant on every call: an allow-listed origin, a named secret.
//! Host calls are bounded by the plugin call's own deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::bindings::{aws, azure, http, log, types};
use super::host::HostState;
use super::manifest::{OriginPattern, arn_matches, scope_allowed};
use crate::cloud::aws::{AssumeRole, AwsCloud, AwsError as CloudAwsError, CallContext, IamTarget};
use crate::cloud::azure::{
    AzureCloud, AzureError as CloudAzureError, PimAssign, PimRemove,
    PrincipalRef as AzurePrincipal, RoleAssignment,
};
use crate::secret::SecretStore;

/// Facts about the call in progress that host capabilities may need.
#[derive(Debug, Clone)]
pub(crate) struct CallInfo {
    pub plugin: String,
    pub deadline: Instant,
    pub http: Option<Arc<HttpCapability>>,
    pub aws: Option<Arc<AwsCapability>>,
    pub azure: Option<Arc<AzureCapability>>,
    pub log_lines: u32,
    /// The request being served (connector calls).
    pub request_id: Option<String>,
    /// Who asked.
    pub requester: Option<String>,
    /// For which entitlement.
    pub entitlement: Option<String>,
    /// When the grant being served ends (ms since epoch).
    pub grant_expires_at: Option<i64>,
}

impl Default for CallInfo {
    fn default() -> Self {
        CallInfo {
            plugin: String::new(),
            deadline: Instant::now(),
            http: None,
            aws: None,
            azure: None,
            log_lines: 0,
            request_id: None,
            requester: None,
            entitlement: None,
            grant_expires_at: None,
        }
    }
}

impl CallInfo {
    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// Most log lines one call may write; the rest are dropped with one notice.
const MAX_LOG_LINES: u32 = 64;
/// Longest log line kept.
const MAX_LOG_LINE: usize = 2048;

impl types::Host for HostState {}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) {
        let call = &mut self.call;
        call.log_lines += 1;
        if call.log_lines > MAX_LOG_LINES {
            if call.log_lines == MAX_LOG_LINES + 1 {
                tracing::warn!(plugin = %call.plugin, "plugin log limit reached; further lines dropped");
            }
            return;
        }
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let plugin = call.plugin.as_str();
        match level {
            log::Level::Trace => {
                tracing::trace!(target: "sallyport::plugin::guest", plugin, "{message}")
            }
            log::Level::Debug => {
                tracing::debug!(target: "sallyport::plugin::guest", plugin, "{message}")
            }
            log::Level::Info => {
                tracing::info!(target: "sallyport::plugin::guest", plugin, "{message}")
            }
            log::Level::Warn => {
                tracing::warn!(target: "sallyport::plugin::guest", plugin, "{message}")
            }
            log::Level::Error => {
                tracing::error!(target: "sallyport::plugin::guest", plugin, "{message}")
            }
        }
    }
}

/// Largest request or response body.
pub const MAX_BODY: usize = 1 << 20;
/// Longest any single outgoing request may take, whatever the plugin asks.
const MAX_HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// The `http` capability granted to one plugin.
#[derive(Debug)]
pub(crate) struct HttpCapability {
    allow: Vec<OriginPattern>,
    secrets: SecretStore,
    client: reqwest::Client,
}

impl HttpCapability {
    pub fn new(allow: Vec<OriginPattern>, secrets: SecretStore, client: reqwest::Client) -> Self {
        HttpCapability {
            allow,
            secrets,
            client,
        }
    }

    async fn send(
        &self,
        req: http::Request,
        remaining: Duration,
    ) -> Result<http::Response, http::Error> {
        let url = url::Url::parse(&req.url)
            .map_err(|e| http::Error::InvalidRequest(format!("bad URL `{}`: {e}", req.url)))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(http::Error::InvalidRequest(format!(
                "scheme `{}` is not http or https",
                url.scheme()
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(http::Error::InvalidRequest(
                "credentials in URLs are refused; use a secret header".into(),
            ));
        }
        let origin = url.origin().ascii_serialization();
        if !self.allow.iter().any(|p| p.matches(&url)) {
            return Err(http::Error::NotAllowed(format!(
                "origin {origin} is not on this plugin's allow-list"
            )));
        }
        let method = match req.method {
            http::Method::Get => reqwest::Method::GET,
            http::Method::Head => reqwest::Method::HEAD,
            http::Method::Post => reqwest::Method::POST,
            http::Method::Put => reqwest::Method::PUT,
            http::Method::Patch => reqwest::Method::PATCH,
            http::Method::Delete => reqwest::Method::DELETE,
        };
        let mut headers = reqwest::header::HeaderMap::new();
        for h in req.headers {
            let name =
                reqwest::header::HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
                    http::Error::InvalidRequest(format!("bad header name `{}`", h.name))
                })?;
            if matches!(
                name.as_str(),
                "host" | "content-length" | "transfer-encoding" | "connection" | "upgrade"
            ) {
                return Err(http::Error::InvalidRequest(format!(
                    "header `{name}` is set by the host"
                )));
            }
            let value = match h.value {
                http::HeaderValue::Text(t) => {
                    reqwest::header::HeaderValue::from_str(&t).map_err(|_| {
                        http::Error::InvalidRequest(format!("bad value for header `{name}`"))
                    })?
                }
                http::HeaderValue::Secret(s) => {
                    let secret = self.secrets.get(&s).ok_or_else(|| {
                        http::Error::NotAllowed(format!(
                            "secret `{s}` is not granted to this plugin (or not configured)"
                        ))
                    })?;
                    let mut v =
                        reqwest::header::HeaderValue::from_str(secret.expose()).map_err(|_| {
                            http::Error::InvalidRequest(format!(
                                "secret `{s}` is not a valid header value"
                            ))
                        })?;
                    v.set_sensitive(true);
                    v
                }
            };
            headers.append(name, value);
        }
        let mut timeout = remaining.min(MAX_HTTP_TIMEOUT);
        if let Some(ms) = req.timeout_ms {
            timeout = timeout.min(Duration::from_millis(u64::from(ms)));
        }
        if timeout.is_zero() {
            return Err(http::Error::Timeout);
        }
        let mut builder = self
            .client
            .request(method, url)
            .headers(headers)
            .timeout(timeout);
        if let Some(body) = req.body {
            if body.len() > MAX_BODY {
                return Err(http::Error::InvalidRequest(format!(
                    "request body is {} bytes; the limit is {MAX_BODY}",
                    body.len()
                )));
            }
            builder = builder.body(body);
        }
        let started = Instant::now();
        let fut = async {
            let mut resp = builder.send().await.map_err(map_reqwest)?;
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .filter_map(|(k, v)| {
                    v.to_str().ok().map(|v| http::ResponseHeader {
                        name: k.as_str().to_owned(),
                        value: v.to_owned(),
                    })
                })
                .collect();
            if resp.content_length().is_some_and(|l| l > MAX_BODY as u64) {
                return Err(http::Error::TooLarge);
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(map_reqwest)? {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(http::Error::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(http::Response {
                status,
                headers,
                body,
            })
        };
        let result = match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(http::Error::Timeout),
        };
        tracing::debug!(
            origin,
            elapsed_ms = started.elapsed().as_millis() as u64,
            ok = result.is_ok(),
            "plugin http call"
        );
        result
    }
}

fn map_reqwest(e: reqwest::Error) -> http::Error {
    if e.is_timeout() {
        http::Error::Timeout
    } else if e.is_connect() {
        http::Error::Unreachable(format!("{e}"))
    } else if e.is_builder() {
        http::Error::InvalidRequest(format!("{e}"))
    } else {
        // Include the source chain: reqwest's top-level text is terse.
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        http::Error::Unreachable(msg)
    }
}

impl http::Host for HostState {
    async fn send(&mut self, req: http::Request) -> Result<http::Response, http::Error> {
        let Some(cap) = self.call.http.clone() else {
            return Err(http::Error::CapabilityNotAvailable(
                "this plugin has no http capability".into(),
            ));
        };
        cap.send(req, self.call.remaining()).await
    }
}

const AWS_UNAVAILABLE: &str =
    "this Sallyport has no AWS capability configured ([aws] in the configuration)";
const AZURE_UNAVAILABLE: &str =
    "this Sallyport has no Azure capability configured ([azure] in the configuration)";

impl CallInfo {
    fn unavailable(&self, capability: &str) {
        tracing::warn!(
            plugin = %self.plugin,
            request_id = self.request_id.as_deref().unwrap_or("-"),
            requester = self.requester.as_deref().unwrap_or("-"),
            entitlement = self.entitlement.as_deref().unwrap_or("-"),
            grant_expires_at = self.grant_expires_at.unwrap_or_default(),
            "plugin called the {capability} capability, which is not configured"
        );
    }
}

fn no_aws<T>(call: &CallInfo) -> Result<T, aws::AwsError> {
    call.unavailable("aws");
    Err(aws::AwsError::CapabilityNotAvailable(
        AWS_UNAVAILABLE.into(),
    ))
}

fn no_azure<T>(call: &CallInfo) -> Result<T, azure::AzureError> {
    call.unavailable("azure");
    Err(azure::AzureError::CapabilityNotAvailable(
        AZURE_UNAVAILABLE.into(),
    ))
}

/// The `aws` capability granted to one plugin: Sallyport's AWS clients and the ARNs the
/// manifest allows.
#[derive(Debug)]
pub(crate) struct AwsCapability {
    pub cloud: Arc<AwsCloud>,
    pub arns: Vec<String>,
}

impl AwsCapability {
    fn check(&self, arns: &[&str]) -> Result<(), aws::AwsError> {
        for arn in arns {
            if !self.arns.iter().any(|p| arn_matches(p, arn)) {
                return Err(aws::AwsError::NotAllowed(format!(
                    "{arn} is not among the ARNs this plugin's manifest allows"
                )));
            }
        }
        Ok(())
    }
}

fn to_wit(e: CloudAwsError) -> aws::AwsError {
    let t = e.to_string();
    match e {
        CloudAwsError::NotAvailable(_) => aws::AwsError::CapabilityNotAvailable(t),
        CloudAwsError::NotAllowed(_) => aws::AwsError::NotAllowed(t),
        CloudAwsError::AccessDenied(_) => aws::AwsError::AccessDenied(t),
        CloudAwsError::NoSuchEntity(_) => aws::AwsError::NoSuchEntity(t),
        CloudAwsError::InvalidInput(_) => aws::AwsError::InvalidInput(t),
        CloudAwsError::LimitExceeded(_) => aws::AwsError::LimitExceeded(t),
        CloudAwsError::Throttled(_) => aws::AwsError::Throttled(t),
        CloudAwsError::Failed(_) => aws::AwsError::Failed(t),
    }
}

/// Run a cloud call within what is left of the plugin call's deadline.
async fn within<T>(
    remaining: Duration,
    fut: impl std::future::Future<Output = Result<T, CloudAwsError>>,
) -> Result<T, aws::AwsError> {
    match tokio::time::timeout(remaining, fut).await {
        Ok(r) => r.map_err(to_wit),
        Err(_) => Err(aws::AwsError::Failed(
            "the AWS call did not finish before the plugin's deadline".into(),
        )),
    }
}

fn iam_target(t: &aws::IamTarget) -> IamTarget {
    match t {
        aws::IamTarget::Role(a) => IamTarget::Role(a.clone()),
        aws::IamTarget::User(a) => IamTarget::User(a.clone()),
        aws::IamTarget::Group(a) => IamTarget::Group(a.clone()),
    }
}

impl HostState {
    fn aws(&self) -> Result<Arc<AwsCapability>, aws::AwsError> {
        match self.call.aws.clone() {
            Some(a) => Ok(a),
            None => no_aws(&self.call),
        }
    }

    fn call_context(&self) -> CallContext {
        CallContext {
            requester: self.call.requester.clone().unwrap_or_default(),
            request_id: self.call.request_id.clone().unwrap_or_default(),
            entitlement: self.call.entitlement.clone().unwrap_or_default(),
            grant_end_ms: self.call.grant_expires_at,
            now_ms: crate::service::now_ms(),
        }
    }
}

impl aws::Host for HostState {
    async fn assume_role(
        &mut self,
        req: aws::AssumeRoleRequest,
    ) -> Result<types::AwsCredentials, aws::AwsError> {
        let cap = self.aws()?;
        let mut arns = vec![req.role_arn.as_str()];
        arns.extend(req.session_policy_arns.iter().map(String::as_str));
        cap.check(&arns)?;
        let ctx = self.call_context();
        let input = AssumeRole {
            role_arn: req.role_arn.clone(),
            duration_secs: req.duration_seconds,
            session_policy: req.session_policy.clone(),
            policy_arns: req.session_policy_arns.clone(),
            tags: req
                .tags
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.clone()))
                .collect(),
        };
        let c = within(self.call.remaining(), cap.cloud.assume_role(&ctx, &input)).await?;
        tracing::info!(
            plugin = %self.call.plugin,
            request_id = %ctx.request_id,
            role = %req.role_arn,
            access_key_id = %c.access_key_id,
            duration_secs = c.duration_secs,
            "minted AWS credentials"
        );
        Ok(types::AwsCredentials {
            access_key_id: c.access_key_id,
            secret_access_key: c.secret_access_key,
            session_token: c.session_token,
            expiration: c.expiration_ms,
        })
    }

    async fn put_inline_policy(
        &mut self,
        target: aws::IamTarget,
        policy_name: String,
        policy_document: String,
    ) -> Result<(), aws::AwsError> {
        let cap = self.aws()?;
        let t = iam_target(&target);
        cap.check(&[t.arn()])?;
        crate::cloud::aws::check_inline_policy(&policy_document, self.call.grant_expires_at)
            .map_err(to_wit)?;
        within(
            self.call.remaining(),
            cap.cloud
                .put_inline_policy(&t, &policy_name, &policy_document),
        )
        .await
    }

    async fn delete_inline_policy(
        &mut self,
        target: aws::IamTarget,
        policy_name: String,
    ) -> Result<(), aws::AwsError> {
        let cap = self.aws()?;
        let t = iam_target(&target);
        cap.check(&[t.arn()])?;
        within(
            self.call.remaining(),
            cap.cloud.delete_inline_policy(&t, &policy_name),
        )
        .await
    }

    async fn attach_managed_policy(
        &mut self,
        target: aws::IamTarget,
        policy_arn: String,
    ) -> Result<(), aws::AwsError> {
        let cap = self.aws()?;
        let t = iam_target(&target);
        cap.check(&[t.arn(), &policy_arn])?;
        within(
            self.call.remaining(),
            cap.cloud.attach_policy(&t, &policy_arn),
        )
        .await
    }

    async fn detach_managed_policy(
        &mut self,
        target: aws::IamTarget,
        policy_arn: String,
    ) -> Result<(), aws::AwsError> {
        let cap = self.aws()?;
        let t = iam_target(&target);
        cap.check(&[t.arn(), &policy_arn])?;
        within(
            self.call.remaining(),
            cap.cloud.detach_policy(&t, &policy_arn),
        )
        .await
    }

    async fn add_user_to_group(
        &mut self,
        user_arn: String,
        group_arn: String,
    ) -> Result<(), aws::AwsError> {
        let cap = self.aws()?;
        cap.check(&[&user_arn, &group_arn])?;
        within(
            self.call.remaining(),
            cap.cloud.add_user_to_group(&user_arn, &group_arn),
        )
        .await
    }

    async fn remove_user_from_group(
        &mut self,
        user_arn: String,
        group_arn: String,
    ) -> Result<(), aws::AwsError> {
        let cap = self.aws()?;
        cap.check(&[&user_arn, &group_arn])?;
        within(
            self.call.remaining(),
            cap.cloud.remove_user_from_group(&user_arn, &group_arn),
        )
        .await
    }
}

/// The `azure` capability granted to one plugin: Sallyport's Azure clients and the scopes the
/// manifest allows.
#[derive(Debug)]
pub(crate) struct AzureCapability {
    pub cloud: Arc<AzureCloud>,
    pub scopes: Vec<String>,
}

impl AzureCapability {
    fn check(&self, scope: &str) -> Result<(), azure::AzureError> {
        if !crate::cloud::azure::is_scope(scope) {
            return Err(azure::AzureError::InvalidInput(format!(
                "`{scope}` is not a scope (e.g. /subscriptions/<id>/resourceGroups/<name>)"
            )));
        }
        if scope_allowed(&self.scopes, scope) {
            Ok(())
        } else {
            Err(azure::AzureError::NotAllowed(format!(
                "{scope} is not under the scopes this plugin's manifest allows"
            )))
        }
    }
}

fn azure_to_wit(e: CloudAzureError) -> azure::AzureError {
    let t = e.to_string();
    match e {
        CloudAzureError::NotAllowed(_) => azure::AzureError::NotAllowed(t),
        CloudAzureError::NotFound(_) => azure::AzureError::NotFound(t),
        CloudAzureError::AccessDenied(_) => azure::AzureError::AccessDenied(t),
        CloudAzureError::InvalidInput(_) => azure::AzureError::InvalidInput(t),
        CloudAzureError::Throttled(_) => azure::AzureError::Throttled(t),
        CloudAzureError::Failed(_) => azure::AzureError::Failed(t),
    }
}

/// Run an Azure call within what is left of the plugin call's deadline.
async fn azure_within<T>(
    call: &CallInfo,
    fut: impl std::future::Future<Output = Result<T, CloudAzureError>>,
) -> Result<T, azure::AzureError> {
    let budget = if call.request_id.is_some() {
        call.remaining()
    } else {
        call.remaining().min(AZURE_LOOKUP_BUDGET)
    };
    match tokio::time::timeout(budget, fut).await {
        Ok(r) => r.map_err(azure_to_wit),
        Err(_) => Err(azure::AzureError::Failed(
            "the Azure call did not finish before the plugin's deadline".into(),
        )),
    }
}

/// Log an assignment Azure made (or found) for a request, and hand it to the plugin.
fn assigned(
    call: &CallInfo,
    what: &'static str,
    ctx: &CallContext,
    (scope, principal, role): (&str, &str, &str),
    a: crate::cloud::azure::Assigned,
) -> azure::Assigned {
    tracing::info!(
        plugin = %call.plugin,
        request_id = %ctx.request_id,
        scope = %scope,
        principal = %principal,
        role = %role,
        status = %a.status,
        preexisting = a.preexisting,
        "{what}"
    );
    azure::Assigned {
        id: a.id,
        status: a.status,
        preexisting: a.preexisting,
    }
}

/// Outside a request (`validate` at start-up, reload and `config check`), Azure lookups get this
/// much time at most: a configuration check must not hang on an unreachable Azure.
const AZURE_LOOKUP_BUDGET: Duration = Duration::from_secs(10);

impl HostState {
    fn azure(&self) -> Result<Arc<AzureCapability>, azure::AzureError> {
        match self.call.azure.clone() {
            Some(a) => Ok(a),
            None => no_azure(&self.call),
        }
    }

    /// When Azure calls must be done by.
    fn azure_deadline(&self) -> Instant {
        if self.call.request_id.is_some() {
            self.call.deadline
        } else {
            self.call.deadline.min(Instant::now() + AZURE_LOOKUP_BUDGET)
        }
    }
}

impl azure::Host for HostState {
    async fn resolve_principal(
        &mut self,
        who: azure::PrincipalRef,
    ) -> Result<String, azure::AzureError> {
        let cap = self.azure()?;
        let who = match who {
            azure::PrincipalRef::ObjectId(s) => AzurePrincipal::ObjectId(s),
            azure::PrincipalRef::UserPrincipalName(s) => AzurePrincipal::UserPrincipalName(s),
        };
        let deadline = self.azure_deadline();
        azure_within(&self.call, cap.cloud.resolve_principal(&who, deadline)).await
    }

    async fn resolve_role_definition(
        &mut self,
        scope: String,
        role: String,
    ) -> Result<String, azure::AzureError> {
        let cap = self.azure()?;
        cap.check(&scope)?;
        let deadline = self.azure_deadline();
        azure_within(
            &self.call,
            cap.cloud.resolve_role_definition(&scope, &role, deadline),
        )
        .await
    }

    async fn pim_assign(
        &mut self,
        req: azure::PimAssignRequest,
    ) -> Result<azure::Assigned, azure::AzureError> {
        let cap = self.azure()?;
        cap.check(&req.scope)?;
        let ctx = self.call_context();
        let input = PimAssign {
            scope: req.scope,
            principal_id: req.principal_id,
            role_definition_id: req.role_definition_id,
            start_ms: req.start,
            duration_secs: req.duration_seconds,
            justification: req.justification,
            ticket: req.ticket,
        };
        let deadline = self.azure_deadline();
        let a = azure_within(&self.call, cap.cloud.pim_assign(&ctx, &input, deadline)).await?;
        Ok(assigned(
            &self.call,
            "Azure PIM assignment",
            &ctx,
            (&input.scope, &input.principal_id, &input.role_definition_id),
            a,
        ))
    }

    async fn pim_remove(
        &mut self,
        req: azure::PimRemoveRequest,
    ) -> Result<String, azure::AzureError> {
        let cap = self.azure()?;
        cap.check(&req.scope)?;
        let ctx = self.call_context();
        let input = PimRemove {
            scope: req.scope,
            principal_id: req.principal_id,
            role_definition_id: req.role_definition_id,
            justification: req.justification,
        };
        let deadline = self.azure_deadline();
        azure_within(&self.call, cap.cloud.pim_remove(&ctx, &input, deadline)).await
    }

    async fn create_role_assignment(
        &mut self,
        req: azure::RoleAssignmentRequest,
    ) -> Result<azure::Assigned, azure::AzureError> {
        let cap = self.azure()?;
        cap.check(&req.scope)?;
        let ctx = self.call_context();
        let input = RoleAssignment {
            scope: req.scope,
            principal_id: req.principal_id,
            principal_type: req.principal_type,
            role_definition_id: req.role_definition_id,
            description: req.description,
        };
        let deadline = self.azure_deadline();
        let a = azure_within(
            &self.call,
            cap.cloud.create_role_assignment(&ctx, &input, deadline),
        )
        .await?;
        Ok(assigned(
            &self.call,
            "Azure role assignment",
            &ctx,
            (&input.scope, &input.principal_id, &input.role_definition_id),
            a,
        ))
    }

    async fn delete_role_assignment(
        &mut self,
        req: azure::RoleAssignmentRef,
    ) -> Result<bool, azure::AzureError> {
        let cap = self.azure()?;
        cap.check(&req.scope)?;
        let ctx = self.call_context();
        let deadline = self.azure_deadline();
        azure_within(
            &self.call,
            cap.cloud.delete_role_assignment(
                &ctx,
                &req.scope,
                &req.principal_id,
                &req.role_definition_id,
                deadline,
            ),
        )
        .await
    }
}
