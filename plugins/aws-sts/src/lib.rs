//! The built-in `aws-sts` connector: an active grant is the right to mint STS credentials for one
//! role until the grant ends.
//!
//! Settings:
//!
//! ```json
//! {
//!   "role_arn": "arn:aws:iam::123456789012:role/prod-admin",
//!   "session_policy": { "Version": "2012-10-17", "Statement": [ ... ] },
//!   "policy_arns": ["arn:aws:iam::aws:policy/ReadOnlyAccess"],
//!   "max_session_seconds": 3600,
//!   "tags": { "team": "platform" }
//! }
//! ```
//!
//! Only `role_arn` is required. The host clamps every session to [900 s, the role's maximum] and
//! never past the grant's end, adds a session policy statement that ends the session's
//! permissions at the grant's end, and tags the session with the requester, the request and the
//! entitlement (`sallyport-requester`, `sallyport-request`, `sallyport-entitlement`).
//!
//! - `grant` assumes the role once (and throws the credentials away) so that a role Sallyport
//!   cannot assume fails the request at once, with AWS's reason.
//! - `credentials` mints fresh credentials on every call; nothing is stored.
//! - `revoke` before the grant's end (revoked, ended) puts an inline policy on the role that
//!   denies everything to sessions of this request issued before now (`aws:TokenIssueTime`), so
//!   live sessions die at once. At the grant's natural end it deletes that policy again.

use serde_json::{Map, Value, json};

#[cfg(target_arch = "wasm32")]
mod guest;

#[path = "../../http/src/time.rs"]
mod time;

mod arn;

pub use arn::is_iam_arn;

mod errors;

use errors::aws_error;
pub use errors::{AwsError, ConnectorError};

/// A complaint about the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    /// Where.
    pub path: String,
    /// What.
    pub message: String,
}

fn err(path: &str, message: impl Into<String>) -> SettingError {
    SettingError {
        path: path.into(),
        message: message.into(),
    }
}

/// Parsed settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub role_arn: String,
    pub session_policy: Option<String>,
    pub policy_arns: Vec<String>,
    pub max_session_seconds: Option<u32>,
    pub tags: Vec<(String, String)>,
}

/// Check and parse the settings; every problem is reported.
pub fn parse(settings: &str) -> Result<Settings, Vec<SettingError>> {
    let v: Value =
        serde_json::from_str(settings).map_err(|e| vec![err("", format!("not JSON: {e}"))])?;
    let Value::Object(o) = v else {
        return Err(vec![err("", "settings must be an object")]);
    };
    let mut errors = Vec::new();
    for k in o.keys() {
        if ![
            "role_arn",
            "session_policy",
            "policy_arns",
            "max_session_seconds",
            "tags",
        ]
        .contains(&k.as_str())
        {
            errors.push(err(
                k,
                "unknown setting; known: role_arn, session_policy, policy_arns, max_session_seconds, tags",
            ));
        }
    }
    let role_arn = match o.get("role_arn") {
        Some(Value::String(s)) if is_iam_arn(s, "role") => s.clone(),
        Some(Value::String(s)) => {
            errors.push(err(
                "role_arn",
                format!(
                    "`{s}` is not an IAM role ARN, e.g. arn:aws:iam::123456789012:role/prod-admin"
                ),
            ));
            String::new()
        }
        Some(_) => {
            errors.push(err("role_arn", "must be a string"));
            String::new()
        }
        None => {
            errors.push(err(
                "role_arn",
                "required: the role to mint credentials for",
            ));
            String::new()
        }
    };
    let session_policy = match o.get("session_policy") {
        None | Some(Value::Null) => None,
        Some(p @ Value::Object(m)) => {
            match m.get("Statement") {
                Some(Value::Array(a)) if !a.is_empty() => {}
                Some(Value::Object(_)) => {}
                _ => errors.push(err(
                    "session_policy.Statement",
                    "a policy needs a Statement (an object or a non-empty array)",
                )),
            }
            let text = p.to_string();
            if text.len() > 2048 {
                errors.push(err(
                    "session_policy",
                    "longer than 2048 characters, the most STS accepts",
                ));
            }
            Some(text)
        }
        Some(_) => {
            errors.push(err(
                "session_policy",
                "must be a policy document (an object)",
            ));
            None
        }
    };
    let mut policy_arns = Vec::new();
    match o.get("policy_arns") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            if a.len() > 10 {
                errors.push(err("policy_arns", "at most 10 managed session policies"));
            }
            for (i, x) in a.iter().enumerate() {
                match x.as_str() {
                    Some(s) if is_iam_arn(s, "policy") => policy_arns.push(s.to_owned()),
                    _ => errors.push(err(
                        &format!("policy_arns[{i}]"),
                        "must be a managed policy ARN, e.g. arn:aws:iam::aws:policy/ReadOnlyAccess",
                    )),
                }
            }
        }
        Some(_) => errors.push(err("policy_arns", "must be a list of policy ARNs")),
    }
    let max_session_seconds = match o.get("max_session_seconds") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) if (900..=43_200).contains(&n) => u32::try_from(n).ok(),
            _ => {
                errors.push(err(
                    "max_session_seconds",
                    "must be a number of seconds from 900 to 43200",
                ));
                None
            }
        },
    };
    let mut tags = Vec::new();
    match o.get("tags") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            if m.len() > 40 {
                errors.push(err("tags", "at most 40 tags (Sallyport adds 3 of its own)"));
            }
            for (k, v) in m {
                let path = format!("tags.{k}");
                if k.to_ascii_lowercase().starts_with("sallyport-") {
                    errors.push(err(&path, "the sallyport- prefix is reserved"));
                } else if k.is_empty() || k.len() > 128 {
                    errors.push(err(&path, "tag keys are 1 to 128 characters"));
                }
                match v.as_str() {
                    Some(s) if s.len() <= 256 => tags.push((k.clone(), s.to_owned())),
                    _ => errors.push(err(
                        &path,
                        "tag values are strings of at most 256 characters",
                    )),
                }
            }
        }
        Some(_) => errors.push(err("tags", "must be an object of strings")),
    }
    if errors.is_empty() {
        Ok(Settings {
            role_arn,
            session_policy,
            policy_arns,
            max_session_seconds,
            tags,
        })
    } else {
        Err(errors)
    }
}

/// What the host can do for this plugin.
pub trait Host {
    /// Mint credentials (`duration` None: as long as allowed).
    fn assume_role(&mut self, s: &Settings, duration: Option<u32>) -> Result<Creds, AwsError>;
    /// Put an inline policy on a role.
    fn put_role_policy(&mut self, role_arn: &str, name: &str, doc: &str) -> Result<(), AwsError>;
    /// Delete an inline policy from a role.
    fn delete_role_policy(&mut self, role_arn: &str, name: &str) -> Result<(), AwsError>;
}

/// Credentials as the host returned them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    pub expiration: i64,
}

fn settings(text: &str) -> Result<Settings, ConnectorError> {
    parse(text).map_err(|es| {
        ConnectorError::InvalidSettings(
            es.iter()
                .map(|e| format!("{}: {}", e.path, e.message))
                .collect::<Vec<_>>()
                .join("; "),
        )
    })
}

/// Why access is taken away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    Expired,
    Revoked,
    Ended,
    Rollback,
}

/// The name of the inline deny policy written on an early revoke.
pub fn revoke_policy_name(request_id: &str) -> String {
    let id: String = request_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(100)
        .collect();
    format!("sallyport-revoked-{id}")
}

/// The deny policy: everything, for sessions of this request issued before `now`.
pub fn revoke_policy(request_id: &str, now_ms: i64) -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "SallyportRevokedSessions",
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {
                "StringEquals": { "aws:PrincipalTag/sallyport-request": request_id },
                "DateLessThan": { "aws:TokenIssueTime": time::rfc3339(now_ms + 1000) }
            }
        }]
    })
    .to_string()
}

/// `grant`: check that the role can be assumed; the handle names it.
pub fn grant(
    host: &mut impl Host,
    settings_text: &str,
    expires_at: i64,
) -> Result<(String, String), ConnectorError> {
    let s = settings(settings_text)?;
    host.assume_role(&s, Some(900)).map_err(aws_error)?;
    let mut h = Map::new();
    h.insert("role_arn".into(), Value::String(s.role_arn.clone()));
    Ok((
        Value::Object(h).to_string(),
        format!(
            "may mint credentials for {} until {}",
            s.role_arn,
            time::rfc3339(expires_at)
        ),
    ))
}

/// `credentials`: fresh credentials, never longer than the window left (the host enforces it).
pub fn credentials(host: &mut impl Host, settings_text: &str) -> Result<Creds, ConnectorError> {
    let s = settings(settings_text)?;
    host.assume_role(&s, s.max_session_seconds)
        .map_err(aws_error)
}

/// `revoke`.
pub fn revoke(
    host: &mut impl Host,
    settings_text: &str,
    request_id: &str,
    reason: RevokeReason,
    now_ms: i64,
) -> Result<(), ConnectorError> {
    let s = settings(settings_text)?;
    let name = revoke_policy_name(request_id);
    match reason {
        // Credentials were only ever minted for the holder while active: kill live sessions.
        RevokeReason::Revoked | RevokeReason::Ended => host
            .put_role_policy(&s.role_arn, &name, &revoke_policy(request_id, now_ms))
            .map_err(aws_error),
        // At the grant's end every session has ended (the session policy saw to it): clean up.
        RevokeReason::Expired => match host.delete_role_policy(&s.role_arn, &name) {
            Ok(()) | Err(AwsError::NoSuchEntity(_)) => Ok(()),
            Err(e) => Err(aws_error(e)),
        },
        // A failed grant minted nothing for anyone.
        RevokeReason::Rollback => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Fake {
        calls: Vec<String>,
        fail: Option<AwsError>,
    }

    impl Host for Fake {
        fn assume_role(&mut self, s: &Settings, d: Option<u32>) -> Result<Creds, AwsError> {
            self.calls.push(format!("assume {} {d:?}", s.role_arn));
            if let Some(e) = self.fail.clone() {
                return Err(e);
            }
            Ok(Creds {
                access_key_id: "ASIA1".into(),
                secret_access_key: "s".into(),
                session_token: "t".into(),
                expiration: 5,
            })
        }
        fn put_role_policy(&mut self, r: &str, n: &str, d: &str) -> Result<(), AwsError> {
            self.calls.push(format!("put {r} {n} {d}"));
            Ok(())
        }
        fn delete_role_policy(&mut self, r: &str, n: &str) -> Result<(), AwsError> {
            self.calls.push(format!("delete {r} {n}"));
            Err(AwsError::NoSuchEntity("gone".into()))
        }
    }

    const ROLE: &str = r#"{"role_arn": "arn:aws:iam::123456789012:role/admin"}"#;

    #[test]
    fn validates_precisely() {
        assert!(parse(ROLE).is_ok());
        let e = parse(r#"{"role_arn": "arn:aws:iam::123:role/x", "tags": {"sallyport-x": "y"}, "max_session_seconds": 10, "colour": 1}"#).unwrap_err();
        let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "colour",
                "role_arn",
                "max_session_seconds",
                "tags.sallyport-x"
            ]
        );
        assert!(parse("{}").unwrap_err()[0].message.contains("required"));
        assert!(parse(r#"{"role_arn": "arn:aws:iam::123456789012:user/x"}"#).is_err());
        assert!(parse(r#"{"role_arn": "arn:aws:iam::123456789012:role/x", "session_policy": {"Version": "2012-10-17"}}"#).is_err());
        assert!(is_iam_arn(
            "arn:aws:iam::aws:policy/ReadOnlyAccess",
            "policy"
        ));
    }

    #[test]
    fn grant_checks_the_role_and_revoke_kills_sessions() {
        let mut h = Fake::default();
        let (handle, summary) = grant(&mut h, ROLE, 0).expect("grant");
        assert!(handle.contains("role/admin") && summary.contains("until 1970"));
        assert_eq!(
            h.calls,
            vec!["assume arn:aws:iam::123456789012:role/admin Some(900)"]
        );
        revoke(&mut h, ROLE, "req-1", RevokeReason::Ended, 1_000).expect("revoke");
        assert!(h.calls[1].contains("sallyport-revoked-req-1"));
        assert!(h.calls[1].contains("aws:TokenIssueTime") && h.calls[1].contains("\"req-1\""));
        revoke(&mut h, ROLE, "req-1", RevokeReason::Expired, 2_000).expect("cleanup is idempotent");
        revoke(&mut h, ROLE, "req-1", RevokeReason::Rollback, 2_000).expect("rollback");
        assert_eq!(h.calls.len(), 3);
        let mut h = Fake {
            fail: Some(AwsError::Permanent("AccessDenied".into())),
            ..Fake::default()
        };
        assert!(matches!(
            grant(&mut h, ROLE, 0),
            Err(ConnectorError::Denied(_))
        ));
    }
}
