//! Host capabilities backed by cloud SDKs: the only users of aws-sdk-rust, azure_identity and the
//! ARM REST API. Plugins reach them only through the capability interfaces in `wit/`, with every
//! ARN or scope checked against their manifest first.

pub mod aws;
pub mod azure;
