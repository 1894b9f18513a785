//! The one error shape of the API: `{code, message, request_id}`, and how every error of the
//! layers below maps onto an HTTP status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::service::ServiceError;
use crate::store::StoreError;

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// For people.
    pub message: String,
    /// Seconds to wait before trying again (`Retry-After`), for rate limits.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// Build one.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 429 with `Retry-After`.
    pub fn rate_limited(what: &str, wait_secs: u64) -> Self {
        ApiError {
            retry_after: Some(wait_secs),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many {what}; try again in {wait_secs} s"),
            )
        }
    }

    /// 400 invalid input.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 401.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        use crate::domain::DomainError as D;
        let status = match &e {
            ServiceError::Domain(d) => match d {
                D::Invalid { .. } => StatusCode::BAD_REQUEST,
                D::NotRequestable { .. }
                | D::SelfReview { .. }
                | D::NotEligible { .. }
                | D::Forbidden(_) => StatusCode::FORBIDDEN,
                D::Illegal { .. } | D::AlreadyReviewed { .. } | D::NotDue => StatusCode::CONFLICT,
                D::Unusable {
                    code: "expired", ..
                } => StatusCode::GONE,
                D::Unusable { .. } => StatusCode::CONFLICT,
            },
            ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
            ServiceError::Forbidden(_) => StatusCode::FORBIDDEN,
            ServiceError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ServiceError::Conflict => StatusCode::CONFLICT,
            ServiceError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ServiceError::NoActiveGrant(_) => StatusCode::NOT_FOUND,
            ServiceError::NoCredentials(_) => StatusCode::CONFLICT,
            ServiceError::Connector(_) => StatusCode::BAD_GATEWAY,
            ServiceError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ServiceError::DigestMismatch(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ServiceError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        let message = match &e {
            ServiceError::Store(s) => {
                // Logged once here, where it becomes a response; the client sees no internals.
                tracing::error!(error = %s, "storage failure");
                "an internal error occurred; quote the request id when reporting it".to_owned()
            }
            other => other.to_string(),
        };
        ApiError::new(status, e.code(), message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::from(ServiceError::Store(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The request id is filled in by the request-id middleware, which sees this marker.
        let mut res = (
            self.status,
            Json(json!({ "code": self.code, "message": self.message, "request_id": null })),
        )
            .into_response();
        if let Some(wait) = self.retry_after {
            res.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, wait.into());
        }
        res.extensions_mut().insert(ErrorBody);
        res
    }
}

/// Marks a response whose JSON body is an [`ApiError`] awaiting its request id.
#[derive(Debug, Clone, Copy)]
pub struct ErrorBody;
