//! Host capabilities backed by cloud SDKs: the only users of aws-sdk-rust (and, later,
//! azure_identity). Plugins reach them only through the capability interfaces in `wit/`, with
//! every ARN or scope checked against their manifest first.

pub mod aws;
