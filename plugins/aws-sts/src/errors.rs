//! Errors shared by the AWS connectors (`aws-sts`, and `aws-iam` through `#[path]`).

/// The host's AWS errors, reduced to what the connector decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AwsError {
    /// Not configured, not allowed, denied by AWS, bad input: retrying will not help.
    Permanent(String),
    /// Does not exist.
    NoSuchEntity(String),
    /// Throttled or failed: a retry may help.
    Transient(String),
}

/// A connector error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectorError {
    Unsupported(String),
    InvalidSettings(String),
    Denied(String),
    Transient(String),
    Failed(String),
}

/// What an AWS failure means for the connector's call.
pub fn aws_error(e: AwsError) -> ConnectorError {
    match e {
        AwsError::Permanent(m) | AwsError::NoSuchEntity(m) => ConnectorError::Denied(m),
        AwsError::Transient(m) => ConnectorError::Transient(m),
    }
}
