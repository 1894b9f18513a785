//! The component glue between the WIT types and the plain ones in the crate root.

wit_bindgen::generate!({
    world: "connector",
    path: "../../wit",
});

use exports::sallyport::plugin::provisioner::{
    ConnectorError, CredentialSet, CredentialsRequest, GrantRequest, GrantResult, Guest,
    RevokeRequest,
};
use sallyport::plugin::azure;
use sallyport::plugin::log;
use sallyport::plugin::types::{AccessRequest, SettingError};

struct AzureRbac;

struct WitHost;

fn error(e: azure::AzureError) -> crate::AzureError {
    use azure::AzureError as E;
    match e {
        E::Throttled(m) | E::Failed(m) => crate::AzureError::Transient(m),
        E::CapabilityNotAvailable(m) => crate::AzureError::Unavailable(m),
        E::NotAllowed(m) => crate::AzureError::NotAllowed(m),
        E::AccessDenied(m) => crate::AzureError::Refused(m),
        E::NotFound(m) | E::InvalidInput(m) => crate::AzureError::Rejected(m),
    }
}

fn assigned(a: azure::Assigned) -> crate::Assigned {
    crate::Assigned {
        id: a.id,
        status: a.status,
        preexisting: a.preexisting,
    }
}

impl crate::Host for WitHost {
    fn resolve_principal(&mut self, who: &crate::Lookup) -> Result<String, crate::AzureError> {
        let r = match who {
            crate::Lookup::ObjectId(s) => azure::PrincipalRef::ObjectId(s.clone()),
            crate::Lookup::Upn(s) => azure::PrincipalRef::UserPrincipalName(s.clone()),
        };
        azure::resolve_principal(&r).map_err(error)
    }

    fn resolve_role(&mut self, scope: &str, role: &str) -> Result<String, crate::AzureError> {
        azure::resolve_role_definition(scope, role).map_err(error)
    }

    fn pim_assign(
        &mut self,
        scope: &str,
        principal: &str,
        role: &str,
        start: i64,
        duration_secs: u64,
        justification: &str,
        ticket: Option<&str>,
    ) -> Result<crate::Assigned, crate::AzureError> {
        azure::pim_assign(&azure::PimAssignRequest {
            scope: scope.into(),
            principal_id: principal.into(),
            role_definition_id: role.into(),
            start,
            duration_seconds: duration_secs,
            justification: justification.into(),
            ticket: ticket.map(str::to_owned),
        })
        .map(assigned)
        .map_err(error)
    }

    fn pim_remove(
        &mut self,
        scope: &str,
        principal: &str,
        role: &str,
        justification: &str,
    ) -> Result<String, crate::AzureError> {
        azure::pim_remove(&azure::PimRemoveRequest {
            scope: scope.into(),
            principal_id: principal.into(),
            role_definition_id: role.into(),
            justification: justification.into(),
        })
        .map_err(error)
    }

    fn create_assignment(
        &mut self,
        scope: &str,
        principal: &str,
        principal_type: Option<&str>,
        role: &str,
        description: &str,
    ) -> Result<crate::Assigned, crate::AzureError> {
        azure::create_role_assignment(&azure::RoleAssignmentRequest {
            scope: scope.into(),
            principal_id: principal.into(),
            principal_type: principal_type.map(str::to_owned),
            role_definition_id: role.into(),
            description: Some(description.into()),
        })
        .map(assigned)
        .map_err(error)
    }

    fn delete_assignment(
        &mut self,
        scope: &str,
        principal: &str,
        role: &str,
    ) -> Result<bool, crate::AzureError> {
        azure::delete_role_assignment(&azure::RoleAssignmentRef {
            scope: scope.into(),
            principal_id: principal.into(),
            role_definition_id: role.into(),
        })
        .map_err(error)
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

fn call(r: &AccessRequest, now: i64) -> crate::Call {
    crate::Call {
        request_id: r.id.clone(),
        entitlement: r.entitlement.clone(),
        requester: crate::Requester {
            id: r.requester.id.clone(),
            email: r.requester.email.clone(),
        },
        justification: r.justification.clone(),
        ticket: r.ticket.clone(),
        now,
    }
}

impl Guest for AzureRbac {
    fn validate(settings: String) -> Result<(), Vec<SettingError>> {
        match crate::validate(&mut WitHost, &settings) {
            Ok(None) => Ok(()),
            Ok(Some(warning)) => {
                log::log(log::Level::Warn, &warning);
                Ok(())
            }
            Err(es) => Err(es
                .into_iter()
                .map(|e| SettingError {
                    path: e.path,
                    message: e.message,
                })
                .collect()),
        }
    }

    fn grant(req: GrantRequest) -> Result<GrantResult, ConnectorError> {
        crate::grant(
            &mut WitHost,
            &req.settings,
            &call(&req.request, req.now),
            req.expires_at,
        )
        .map(|(handle, summary)| GrantResult { handle, summary })
        .map_err(connector_error)
    }

    fn revoke(req: RevokeRequest) -> Result<(), ConnectorError> {
        let outcome = crate::revoke(
            &mut WitHost,
            &req.settings,
            &req.handle,
            &call(&req.request, req.now),
        )
        .map_err(connector_error)?;
        log::log(
            log::Level::Info,
            &format!("revoke of {}: {outcome}", req.request.id),
        );
        Ok(())
    }

    fn credentials(_req: CredentialsRequest) -> Result<CredentialSet, ConnectorError> {
        Err(ConnectorError::Unsupported(
            "azure-rbac assigns a role to the requester's own Entra identity; sign in with `az login` to use it"
                .into(),
        ))
    }
}

export!(AzureRbac);
