//! The component glue between the WIT types and the plain ones in the crate root.

wit_bindgen::generate!({
    world: "connector",
    path: "../../wit",
});

use exports::sallyport::plugin::provisioner::{
    ConnectorError, CredentialSet, CredentialsRequest, GrantRequest, GrantResult, Guest,
    RevokeReason, RevokeRequest,
};
use sallyport::plugin::aws;
use sallyport::plugin::types::{AwsCredentials, KeyValue, SettingError};

struct AwsSts;

struct WitHost;

fn error(e: aws::AwsError) -> crate::AwsError {
    use aws::AwsError as E;
    match e {
        E::NoSuchEntity(m) => crate::AwsError::NoSuchEntity(m),
        E::Throttled(m) | E::Failed(m) => crate::AwsError::Transient(m),
        E::CapabilityNotAvailable(m)
        | E::NotAllowed(m)
        | E::AccessDenied(m)
        | E::InvalidInput(m)
        | E::LimitExceeded(m) => crate::AwsError::Permanent(m),
    }
}

impl crate::Host for WitHost {
    fn assume_role(
        &mut self,
        s: &crate::Settings,
        duration: Option<u32>,
    ) -> Result<crate::Creds, crate::AwsError> {
        let req = aws::AssumeRoleRequest {
            role_arn: s.role_arn.clone(),
            duration_seconds: duration,
            session_policy: s.session_policy.clone(),
            session_policy_arns: s.policy_arns.clone(),
            tags: s
                .tags
                .iter()
                .map(|(k, v)| KeyValue {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
        };
        aws::assume_role(&req)
            .map(|c| crate::Creds {
                access_key_id: c.access_key_id,
                secret_access_key: c.secret_access_key,
                session_token: c.session_token,
                expiration: c.expiration,
            })
            .map_err(error)
    }

    fn put_role_policy(
        &mut self,
        role: &str,
        name: &str,
        doc: &str,
    ) -> Result<(), crate::AwsError> {
        aws::put_inline_policy(&aws::IamTarget::Role(role.into()), name, doc).map_err(error)
    }

    fn delete_role_policy(&mut self, role: &str, name: &str) -> Result<(), crate::AwsError> {
        aws::delete_inline_policy(&aws::IamTarget::Role(role.into()), name).map_err(error)
    }
}

fn connector_error(e: crate::ConnectorError) -> ConnectorError {
    use crate::ConnectorError as E;
    match e {
        E::Unsupported(m) => ConnectorError::Unsupported(m),
        E::InvalidSettings(m) => ConnectorError::InvalidSettings(m),
        E::Denied(m) => ConnectorError::Denied(m),
        E::Transient(m) => ConnectorError::Transient(m),
        E::Failed(m) => ConnectorError::Failed(m),
    }
}

impl Guest for AwsSts {
    fn validate(settings: String) -> Result<(), Vec<SettingError>> {
        crate::parse(&settings).map(|_| ()).map_err(|es| {
            es.into_iter()
                .map(|e| SettingError {
                    path: e.path,
                    message: e.message,
                })
                .collect()
        })
    }

    fn grant(req: GrantRequest) -> Result<GrantResult, ConnectorError> {
        crate::grant(&mut WitHost, &req.settings, req.expires_at)
            .map(|(handle, summary)| GrantResult { handle, summary })
            .map_err(connector_error)
    }

    fn revoke(req: RevokeRequest) -> Result<(), ConnectorError> {
        let reason = match req.reason {
            RevokeReason::Expired => crate::RevokeReason::Expired,
            RevokeReason::Revoked => crate::RevokeReason::Revoked,
            RevokeReason::Ended => crate::RevokeReason::Ended,
            RevokeReason::Rollback => crate::RevokeReason::Rollback,
        };
        crate::revoke(
            &mut WitHost,
            &req.settings,
            &req.handle,
            &req.request.id,
            reason,
            req.now,
        )
        .map_err(connector_error)
    }

    fn credentials(req: CredentialsRequest) -> Result<CredentialSet, ConnectorError> {
        crate::credentials(&mut WitHost, &req.settings, &req.handle)
            .map(|c| {
                CredentialSet::Aws(AwsCredentials {
                    access_key_id: c.access_key_id,
                    secret_access_key: c.secret_access_key,
                    session_token: c.session_token,
                    expiration: c.expiration.min(req.expires_at),
                })
            })
            .map_err(connector_error)
    }
}

export!(AwsSts);
