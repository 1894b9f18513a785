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
//! - `credentials` mints fresh credentials on every call; nothing is stored. The role is the one
//!   the grant named (its handle), even if the entitlement's settings changed since.
//! - `revoke` before the grant's end (revoked, ended) puts an inline policy on the grant's role
//!   that denies everything to sessions of this request (tag `sallyport-request`) issued before
//!   the grant's end (`aws:TokenIssueTime`): live sessions die at once, and so does one a mint
//!   still in flight returns a moment later. At the grant's natural end it deletes that policy
//!   again (every session of the grant has lost its permissions by then).

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
            if text.len() > MAX_SESSION_POLICY {
                errors.push(err(
                    "session_policy",
                    format!(
                        "longer than {MAX_SESSION_POLICY} characters: STS accepts 2048, and Sallyport adds a statement that ends the session at the grant's end"
                    ),
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

/// The longest session policy a setting may hold: STS takes 2048 characters, and the host appends
/// a Deny statement of about 160 that ends the session at the grant's end.
pub const MAX_SESSION_POLICY: usize = 1800;

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

/// The deny policy: everything, for sessions of this request issued before `until` (the grant's
/// end, so that a mint racing the revoke is caught too).
pub fn revoke_policy(request_id: &str, until_ms: i64) -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "SallyportRevokedSessions",
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {
                "StringEquals": { "aws:PrincipalTag/sallyport-request": request_id },
                "DateLessThan": { "aws:TokenIssueTime": time::rfc3339(until_ms + 1000) }
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
    h.insert("expires_at".into(), Value::from(expires_at));
    Ok((
        Value::Object(h).to_string(),
        format!(
            "may mint credentials for {} until {}",
            s.role_arn,
            time::rfc3339(expires_at)
        ),
    ))
}

/// What `grant` wrote in the handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handle {
    /// The role the grant is for.
    pub role_arn: String,
    /// The grant's end (absent in handles of older grants).
    pub expires_at: Option<i64>,
}

/// Read a grant's handle.
pub fn handle(text: &str) -> Result<Handle, ConnectorError> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| ConnectorError::Failed(format!("the grant's handle is not JSON: {e}")))?;
    match v.get("role_arn").and_then(Value::as_str) {
        Some(r) if is_iam_arn(r, "role") => Ok(Handle {
            role_arn: r.to_owned(),
            expires_at: v.get("expires_at").and_then(Value::as_i64),
        }),
        _ => Err(ConnectorError::Failed(
            "the grant's handle names no role".into(),
        )),
    }
}

/// `credentials`: fresh credentials for the grant's role, never longer than the window left (the
/// host enforces it).
pub fn credentials(
    host: &mut impl Host,
    settings_text: &str,
    handle_text: &str,
) -> Result<Creds, ConnectorError> {
    let mut s = settings(settings_text)?;
    s.role_arn = handle(handle_text)?.role_arn;
    host.assume_role(&s, s.max_session_seconds)
        .map_err(aws_error)
}

/// `revoke`: acts on the role the grant's handle names.
pub fn revoke(
    host: &mut impl Host,
    settings_text: &str,
    handle_text: &str,
    request_id: &str,
    reason: RevokeReason,
    now_ms: i64,
) -> Result<(), ConnectorError> {
    if reason == RevokeReason::Rollback {
        // A failed grant minted nothing for anyone.
        return Ok(());
    }
    let h = match handle(handle_text) {
        Ok(h) => h,
        // A handle from before handles named their role: the settings still do.
        Err(_) => Handle {
            role_arn: settings(settings_text)?.role_arn,
            expires_at: None,
        },
    };
    let name = revoke_policy_name(request_id);
    match reason {
        // Credentials were only ever minted for the holder while active: kill live sessions,
        // and any a mint in flight returns (issued before the grant's end).
        RevokeReason::Revoked | RevokeReason::Ended => {
            // Without the grant's end, a day covers any mint in flight.
            let until = h.expires_at.unwrap_or(now_ms + 86_400_000).max(now_ms);
            host.put_role_policy(&h.role_arn, &name, &revoke_policy(request_id, until))
                .map_err(aws_error)
        }
        // At the grant's end every session has ended (the session policy saw to it): clean up.
        RevokeReason::Expired => match host.delete_role_policy(&h.role_arn, &name) {
            Ok(()) | Err(AwsError::NoSuchEntity(_)) => Ok(()),
            Err(e) => Err(aws_error(e)),
        },
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
        let end = 1_800_000_000_000;
        let (handle_text, summary) = grant(&mut h, ROLE, end).expect("grant");
        assert!(handle_text.contains("role/admin") && summary.contains("until 2027"));
        assert_eq!(
            h.calls,
            vec!["assume arn:aws:iam::123456789012:role/admin Some(900)"]
        );
        // The settings now name another role: the grant's own role is the one revoked.
        let moved = r#"{"role_arn": "arn:aws:iam::123456789012:role/other"}"#;
        revoke(
            &mut h,
            moved,
            &handle_text,
            "req-1",
            RevokeReason::Ended,
            1_000,
        )
        .expect("revoke");
        assert!(h.calls[1].starts_with("put arn:aws:iam::123456789012:role/admin "));
        assert!(h.calls[1].contains("sallyport-revoked-req-1"));
        assert!(h.calls[1].contains("\"req-1\""));
        // Sessions issued up to the grant's end are denied, not only those before the revoke.
        assert!(
            h.calls[1].contains(r#""aws:TokenIssueTime":"2027-01-15T08:00:01Z""#),
            "{}",
            h.calls[1]
        );
        revoke(
            &mut h,
            moved,
            &handle_text,
            "req-1",
            RevokeReason::Expired,
            2_000,
        )
        .expect("cleanup is idempotent");
        assert!(h.calls[2].starts_with("delete arn:aws:iam::123456789012:role/admin "));
        revoke(&mut h, ROLE, "{}", "req-1", RevokeReason::Rollback, 2_000).expect("rollback");
        assert_eq!(h.calls.len(), 3);
        // Credentials are for the grant's role, whatever the settings say now.
        credentials(&mut h, moved, &handle_text).expect("mint");
        assert_eq!(
            h.calls[3],
            "assume arn:aws:iam::123456789012:role/admin None"
        );
        assert!(matches!(
            credentials(&mut h, ROLE, "{}"),
            Err(ConnectorError::Failed(_))
        ));
        assert_eq!(h.calls.len(), 4, "no handle, no mint");
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
