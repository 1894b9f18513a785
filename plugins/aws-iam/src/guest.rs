//! The component glue between the WIT types and the plain ones in the crate root.

wit_bindgen::generate!({
    world: "connector",
    path: "../../wit",
});

use exports::sallyport::plugin::provisioner::{
    ConnectorError, CredentialSet, CredentialsRequest, GrantRequest, GrantResult, Guest,
    RevokeRequest,
};
use sallyport::plugin::aws::{self, IamTarget};
use sallyport::plugin::types::SettingError;

struct AwsIam;

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
    fn put_user_policy(
        &mut self,
        user: &str,
        name: &str,
        doc: &str,
    ) -> Result<(), crate::AwsError> {
        aws::put_inline_policy(&IamTarget::User(user.into()), name, doc).map_err(error)
    }
    fn delete_user_policy(&mut self, user: &str, name: &str) -> Result<(), crate::AwsError> {
        aws::delete_inline_policy(&IamTarget::User(user.into()), name).map_err(error)
    }
    fn attach(&mut self, user: &str, policy: &str) -> Result<(), crate::AwsError> {
        aws::attach_managed_policy(&IamTarget::User(user.into()), policy).map_err(error)
    }
    fn detach(&mut self, user: &str, policy: &str) -> Result<(), crate::AwsError> {
        aws::detach_managed_policy(&IamTarget::User(user.into()), policy).map_err(error)
    }
    fn add_to_group(&mut self, user: &str, group: &str) -> Result<(), crate::AwsError> {
        aws::add_user_to_group(user, group).map_err(error)
    }
    fn remove_from_group(&mut self, user: &str, group: &str) -> Result<(), crate::AwsError> {
        aws::remove_user_from_group(user, group).map_err(error)
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

impl Guest for AwsIam {
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
        crate::grant(
            &mut WitHost,
            &req.settings,
            &req.request.requester.id,
            &req.request.id,
            req.expires_at,
        )
        .map(|(handle, summary)| GrantResult { handle, summary })
        .map_err(connector_error)
    }

    fn revoke(req: RevokeRequest) -> Result<(), ConnectorError> {
        crate::revoke(
            &mut WitHost,
            &req.settings,
            &req.handle,
            &req.request.requester.id,
            &req.request.id,
        )
        .map_err(connector_error)
    }

    fn credentials(_req: CredentialsRequest) -> Result<CredentialSet, ConnectorError> {
        Err(ConnectorError::Unsupported(
            "aws-iam changes the requester's own IAM user; it has no credentials to hand out"
                .into(),
        ))
    }
}

export!(AwsIam);
