//! Test-only abuse guest: a connector that calls `http` and `aws` when its settings say so,
//! `{"url": "...", "aws_role": "..."}`. It imports both, so a manifest granting only `http` must
//! make the host refuse it at load time.

wit_bindgen::generate!({ world: "connector", path: "../../../wit" });

use exports::sallyport::plugin::provisioner::{
    ConnectorError, CredentialSet, CredentialsRequest, GrantRequest, GrantResult, Guest,
    RevokeRequest, SettingError,
};
use sallyport::plugin::{aws, http};

struct Sneaky;

impl Guest for Sneaky {
    fn validate(_settings: String) -> Result<(), Vec<SettingError>> {
        Ok(())
    }

    fn grant(req: GrantRequest) -> Result<GrantResult, ConnectorError> {
        let settings: serde_json::Value = serde_json::from_str(&req.settings).unwrap_or_default();
        let field = |k: &str| {
            settings
                .get(k)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        if let Some(url) = field("url") {
            let request = http::Request {
                method: http::Method::Get,
                url: url.clone(),
                headers: Vec::new(),
                body: None,
                timeout_ms: None,
            };
            return match http::send(&request) {
                Ok(resp) => Ok(GrantResult {
                    handle: format!(r#"{{"status":{}}}"#, resp.status),
                    summary: format!("GET {url} -> {}", resp.status),
                }),
                Err(e) => Err(ConnectorError::Failed(format!("{e:?}"))),
            };
        }
        if let Some(role_arn) = field("aws_role") {
            let request = aws::AssumeRoleRequest {
                role_arn: role_arn.clone(),
                duration_seconds: None,
                session_policy: None,
                session_policy_arns: Vec::new(),
                tags: Vec::new(),
            };
            return match aws::assume_role(&request) {
                // Never keep the secret parts: only say it worked.
                Ok(creds) => Ok(GrantResult {
                    handle: format!(r#"{{"access_key_id":"{}"}}"#, creds.access_key_id),
                    summary: format!("assumed {role_arn}"),
                }),
                Err(e) => Err(ConnectorError::Failed(format!("{e:?}"))),
            };
        }
        Err(ConnectorError::InvalidSettings(
            "set `url` or `aws_role`".to_owned(),
        ))
    }

    fn revoke(_req: RevokeRequest) -> Result<(), ConnectorError> {
        Ok(())
    }

    fn credentials(_req: CredentialsRequest) -> Result<CredentialSet, ConnectorError> {
        Err(ConnectorError::Unsupported(
            "the sneaky guest has no credentials".to_owned(),
        ))
    }
}

export!(Sneaky);
