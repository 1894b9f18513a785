//! The component glue: converts between the WIT types and the plain ones in the crate root.

wit_bindgen::generate!({
    world: "connector",
    path: "../../wit",
});

use exports::sallyport::plugin::provisioner::{
    ConnectorError, CredentialSet, CredentialsRequest, GrantRequest, GrantResult, Guest,
    RevokeReason, RevokeRequest,
};
use sallyport::plugin::http;
use sallyport::plugin::log::{Level, log};
use sallyport::plugin::types::{AccessRequest, SettingError};

struct HttpConnector;

/// The real host: `sallyport:plugin/http` and `sallyport:plugin/log`.
struct WitHost;

impl crate::Host for WitHost {
    fn send(&mut self, req: crate::OutRequest) -> Result<crate::InResponse, crate::HttpError> {
        use crate::settings::Method as M;
        let method = match req.method {
            M::Get => http::Method::Get,
            M::Head => http::Method::Head,
            M::Post => http::Method::Post,
            M::Put => http::Method::Put,
            M::Patch => http::Method::Patch,
            M::Delete => http::Method::Delete,
        };
        let headers = req
            .headers
            .into_iter()
            .map(|(name, value)| http::Header {
                name,
                value: match value {
                    crate::HeaderValue::Text(t) => http::HeaderValue::Text(t),
                    crate::HeaderValue::Secret(s) => http::HeaderValue::Secret(s),
                },
            })
            .collect();
        let request = http::Request {
            method,
            url: req.url,
            headers,
            body: req.body,
            timeout_ms: Some(req.timeout_ms),
        };
        match http::send(&request) {
            Ok(resp) => Ok(crate::InResponse {
                status: resp.status,
                body: resp.body,
            }),
            Err(e) => Err(match e {
                http::Error::CapabilityNotAvailable(m) => {
                    crate::HttpError::CapabilityNotAvailable(m)
                }
                http::Error::NotAllowed(m) => crate::HttpError::NotAllowed(m),
                http::Error::InvalidRequest(m) => crate::HttpError::InvalidRequest(m),
                http::Error::Unreachable(m) => crate::HttpError::Unreachable(m),
                http::Error::Timeout => crate::HttpError::Timeout,
                http::Error::TooLarge => crate::HttpError::TooLarge,
            }),
        }
    }

    fn warn(&mut self, message: &str) {
        log(Level::Warn, message);
    }
}

fn access(r: AccessRequest) -> crate::AccessRequest {
    crate::AccessRequest {
        id: r.id,
        entitlement: r.entitlement,
        duration_seconds: r.duration_seconds,
        justification: r.justification,
        ticket: r.ticket,
        requester_id: r.requester.id,
        requester_email: r.requester.email,
        requester_display_name: r.requester.display_name,
    }
}

fn error(e: crate::ConnectorError) -> ConnectorError {
    use crate::ErrorKind as K;
    match e.kind {
        K::Unsupported => ConnectorError::Unsupported(e.message),
        K::InvalidSettings => ConnectorError::InvalidSettings(e.message),
        K::Denied => ConnectorError::Denied(e.message),
        K::Transient => ConnectorError::Transient(e.message),
        K::Failed => ConnectorError::Failed(e.message),
    }
}

impl Guest for HttpConnector {
    fn validate(settings: String) -> Result<(), Vec<SettingError>> {
        crate::validate(&settings).map_err(|es| {
            es.into_iter()
                .map(|e| SettingError {
                    path: e.path,
                    message: e.message,
                })
                .collect()
        })
    }

    fn grant(req: GrantRequest) -> Result<GrantResult, ConnectorError> {
        let request = access(req.request);
        crate::grant(
            &mut WitHost,
            &request,
            &req.settings,
            req.expires_at,
            req.now,
        )
        .map(|g| GrantResult {
            handle: g.handle,
            summary: g.summary,
        })
        .map_err(error)
    }

    fn revoke(req: RevokeRequest) -> Result<(), ConnectorError> {
        let reason = match req.reason {
            RevokeReason::Expired => crate::RevokeReason::Expired,
            RevokeReason::Revoked => crate::RevokeReason::Revoked,
            RevokeReason::Ended => crate::RevokeReason::Ended,
            RevokeReason::Rollback => crate::RevokeReason::Rollback,
        };
        let request = access(req.request);
        crate::revoke(
            &mut WitHost,
            &request,
            &req.settings,
            &req.handle,
            reason,
            req.now,
        )
        .map_err(error)
    }

    fn credentials(_req: CredentialsRequest) -> Result<CredentialSet, ConnectorError> {
        Err(error(crate::credentials()))
    }
}

export!(HttpConnector);
