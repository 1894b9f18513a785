//! The built-in `aws-iam` connector: temporary IAM grants.
//!
//! Settings (exactly one of `attach_policy_arn`, `group_arn`, `inline_policy`):
//!
//! ```json
//! { "user_arn": "arn:aws:iam::123456789012:user/{{requester.id}}",
//!   "attach_policy_arn": "arn:aws:iam::aws:policy/ReadOnlyAccess" }
//! { "user_arn": "...", "group_arn": "arn:aws:iam::123456789012:group/oncall" }
//! { "user_arn": "...", "inline_policy": { "Version": "2012-10-17", "Statement": [ ... ] } }
//! ```
//!
//! `user_arn` may name the requester with `{{requester.id}}` (IAM user names allow letters,
//! digits and `+=,.@_-`; other requester ids are refused). An inline policy is written as
//! `sallyport-<request id>` and every `Allow` statement in it gets
//! `Condition.DateLessThan["aws:CurrentTime"] = expires_at`, so it stops working on time even if
//! Sallyport is down. Attached managed policies and group memberships cannot carry a condition:
//! they end when Sallyport revokes them. `revoke` removes what `grant` added, as its handle
//! recorded it (so a later change of the settings cannot leave a grant's access in place);
//! removing what is already gone is a success. Do not use it to grant what a user already holds
//! otherwise: the revoke removes it either way.

use serde_json::{Map, Value, json};

#[cfg(target_arch = "wasm32")]
mod guest;

#[path = "../../http/src/time.rs"]
mod time;

#[path = "../../aws-sts/src/arn.rs"]
mod arn;

pub use arn::is_iam_arn;

#[path = "../../aws-sts/src/errors.rs"]
mod errors;

use errors::aws_error;
pub use errors::{AwsError, ConnectorError};

/// A complaint about the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    pub path: String,
    pub message: String,
}

fn err(path: &str, message: impl Into<String>) -> SettingError {
    SettingError {
        path: path.into(),
        message: message.into(),
    }
}

/// What the grant does.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Attach a managed policy to the user.
    Attach(String),
    /// Add the user to a group.
    Group(String),
    /// Put an inline policy on the user (the document as given).
    Inline(Value),
}

/// Parsed settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub user_arn: String,
    pub kind: Kind,
}

/// Check and parse.
pub fn parse(settings: &str) -> Result<Settings, Vec<SettingError>> {
    let v: Value =
        serde_json::from_str(settings).map_err(|e| vec![err("", format!("not JSON: {e}"))])?;
    let Value::Object(o) = v else {
        return Err(vec![err("", "settings must be an object")]);
    };
    let mut errors = Vec::new();
    for k in o.keys() {
        if ![
            "user_arn",
            "attach_policy_arn",
            "group_arn",
            "inline_policy",
        ]
        .contains(&k.as_str())
        {
            errors.push(err(
                k,
                "unknown setting; known: user_arn, attach_policy_arn, group_arn, inline_policy",
            ));
        }
    }
    let user_arn = match o.get("user_arn").and_then(Value::as_str) {
        Some(s) => {
            let probe = s.replace("{{requester.id}}", "x");
            if probe.contains("{{") {
                errors.push(err("user_arn", "the only placeholder is {{requester.id}}"));
            } else if !is_iam_arn(&probe, "user") {
                errors.push(err(
                    "user_arn",
                    format!("`{s}` is not an IAM user ARN, e.g. arn:aws:iam::123456789012:user/{{{{requester.id}}}}"),
                ));
            }
            s.to_owned()
        }
        None => {
            errors.push(err(
                "user_arn",
                "required (a string): the IAM user to grant to",
            ));
            String::new()
        }
    };
    let mut kinds = Vec::new();
    if let Some(v) = o.get("attach_policy_arn") {
        match v.as_str() {
            Some(s) if is_iam_arn(s, "policy") => kinds.push(Kind::Attach(s.to_owned())),
            _ => errors.push(err("attach_policy_arn", "must be a managed policy ARN")),
        }
    }
    if let Some(v) = o.get("group_arn") {
        match v.as_str() {
            Some(s) if is_iam_arn(s, "group") => kinds.push(Kind::Group(s.to_owned())),
            _ => errors.push(err("group_arn", "must be an IAM group ARN")),
        }
    }
    if let Some(v) = o.get("inline_policy") {
        match v.get("Statement") {
            Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_object) => {
                kinds.push(Kind::Inline(v.clone()))
            }
            Some(Value::Object(_)) => kinds.push(Kind::Inline(v.clone())),
            _ => errors.push(err(
                "inline_policy.Statement",
                "a policy document needs a Statement (an object or a non-empty array of objects)",
            )),
        }
    }
    let kind = match kinds.len() {
        1 => kinds.pop(),
        0 if errors.is_empty() => {
            errors.push(err(
                "",
                "give one of attach_policy_arn, group_arn or inline_policy",
            ));
            None
        }
        0 => None,
        _ => {
            errors.push(err(
                "",
                "give only one of attach_policy_arn, group_arn or inline_policy",
            ));
            None
        }
    };
    match (errors.is_empty(), kind) {
        (true, Some(kind)) => Ok(Settings { user_arn, kind }),
        _ => Err(errors),
    }
}

/// The policy with every Allow statement ending at `expires_at`.
pub fn with_expiry(policy: &Value, expires_at_ms: i64) -> Value {
    let end = time::rfc3339(expires_at_ms);
    let mut doc = policy.clone();
    let statements: Vec<Value> = match doc.get("Statement") {
        Some(Value::Array(a)) => a.clone(),
        Some(o @ Value::Object(_)) => vec![o.clone()],
        _ => Vec::new(),
    };
    let statements: Vec<Value> = statements
        .into_iter()
        .map(|mut st| {
            if st.get("Effect").and_then(Value::as_str) == Some("Allow")
                && let Some(obj) = st.as_object_mut()
            {
                let cond = obj
                    .entry("Condition")
                    .or_insert_with(|| Value::Object(Map::new()));
                if !cond.is_object() {
                    *cond = Value::Object(Map::new());
                }
                let dlt = cond
                    .as_object_mut()
                    .map(|c| c.entry("DateLessThan").or_insert_with(|| json!({})));
                if let Some(Value::Object(d)) = dlt {
                    // Keep an earlier end the author set; never a later one. Only a time in the
                    // same form as ours compares as text (`"1900000000"` would sort first).
                    let keep = d
                        .get("aws:CurrentTime")
                        .and_then(Value::as_str)
                        .is_some_and(|t| is_utc_seconds(t) && t < end.as_str());
                    if !keep {
                        d.insert("aws:CurrentTime".into(), Value::String(end.clone()));
                    }
                }
            }
            st
        })
        .collect();
    if let Some(o) = doc.as_object_mut() {
        o.insert("Statement".into(), Value::Array(statements));
        o.entry("Version")
            .or_insert_with(|| Value::String("2012-10-17".into()));
    }
    doc
}

/// `YYYY-MM-DDTHH:MM:SSZ`, the form Sallyport writes.
fn is_utc_seconds(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// The user ARN for a requester.
pub fn user_for(template: &str, requester: &str) -> Result<String, ConnectorError> {
    if requester.is_empty()
        || requester.len() > 64
        || !requester
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
    {
        return Err(ConnectorError::Denied(format!(
            "requester `{requester}` cannot be an IAM user name (letters, digits and +=,.@_- only)"
        )));
    }
    Ok(template.replace("{{requester.id}}", requester))
}

/// The inline policy's name.
pub fn policy_name(request_id: &str) -> String {
    let id: String = request_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(100)
        .collect();
    format!("sallyport-{id}")
}

/// Host calls.
pub trait Host {
    fn put_user_policy(&mut self, user: &str, name: &str, doc: &str) -> Result<(), AwsError>;
    fn delete_user_policy(&mut self, user: &str, name: &str) -> Result<(), AwsError>;
    fn attach(&mut self, user: &str, policy: &str) -> Result<(), AwsError>;
    fn detach(&mut self, user: &str, policy: &str) -> Result<(), AwsError>;
    fn add_to_group(&mut self, user: &str, group: &str) -> Result<(), AwsError>;
    fn remove_from_group(&mut self, user: &str, group: &str) -> Result<(), AwsError>;
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

/// `grant`.
pub fn grant(
    host: &mut impl Host,
    settings_text: &str,
    requester: &str,
    request_id: &str,
    expires_at: i64,
) -> Result<(String, String), ConnectorError> {
    let s = settings(settings_text)?;
    let user = user_for(&s.user_arn, requester)?;
    let (handle, summary) = match &s.kind {
        Kind::Attach(p) => {
            host.attach(&user, p).map_err(aws_error)?;
            (
                json!({ "user_arn": user, "attached": p }),
                format!("attached {p} to {user}"),
            )
        }
        Kind::Group(g) => {
            host.add_to_group(&user, g).map_err(aws_error)?;
            (
                json!({ "user_arn": user, "group": g }),
                format!("added {user} to {g}"),
            )
        }
        Kind::Inline(p) => {
            let name = policy_name(request_id);
            let doc = with_expiry(p, expires_at);
            host.put_user_policy(&user, &name, &doc.to_string())
                .map_err(aws_error)?;
            (
                json!({ "user_arn": user, "inline_policy": name }),
                format!(
                    "put inline policy {name} on {user}, valid until {}",
                    time::rfc3339(expires_at)
                ),
            )
        }
    };
    Ok((handle.to_string(), summary))
}

/// What a grant did, as its handle records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Granted {
    Attached { user: String, policy: String },
    Group { user: String, group: String },
    Inline { user: String, name: String },
}

/// Read a grant's handle (`None` for a handle that records nothing, e.g. `{}` on a rollback).
pub fn granted(handle: &str) -> Option<Granted> {
    let v: Value = serde_json::from_str(handle).ok()?;
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let user = text("user_arn").filter(|u| is_iam_arn(u, "user"))?;
    if let Some(policy) = text("attached").filter(|p| is_iam_arn(p, "policy")) {
        Some(Granted::Attached { user, policy })
    } else if let Some(group) = text("group").filter(|g| is_iam_arn(g, "group")) {
        Some(Granted::Group { user, group })
    } else {
        text("inline_policy").map(|name| Granted::Inline { user, name })
    }
}

/// `revoke`: removes what the handle says the grant added (what the settings say, for a handle
/// that records nothing); idempotent.
pub fn revoke(
    host: &mut impl Host,
    settings_text: &str,
    handle: &str,
    requester: &str,
    request_id: &str,
) -> Result<(), ConnectorError> {
    let done = match granted(handle) {
        Some(g) => g,
        None => {
            let s = settings(settings_text)?;
            let user = user_for(&s.user_arn, requester)?;
            match s.kind {
                Kind::Attach(policy) => Granted::Attached { user, policy },
                Kind::Group(group) => Granted::Group { user, group },
                Kind::Inline(_) => Granted::Inline {
                    user,
                    name: policy_name(request_id),
                },
            }
        }
    };
    let r = match &done {
        Granted::Attached { user, policy } => host.detach(user, policy),
        Granted::Group { user, group } => host.remove_from_group(user, group),
        Granted::Inline { user, name } => host.delete_user_policy(user, name),
    };
    match r {
        Ok(()) | Err(AwsError::NoSuchEntity(_)) => Ok(()),
        Err(e) => Err(aws_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates() {
        let ok = r#"{"user_arn": "arn:aws:iam::123456789012:user/{{requester.id}}", "group_arn": "arn:aws:iam::123456789012:group/oncall"}"#;
        assert!(matches!(parse(ok).map(|s| s.kind), Ok(Kind::Group(_))));
        let both = r#"{"user_arn": "arn:aws:iam::123456789012:user/x", "group_arn": "arn:aws:iam::123456789012:group/g", "attach_policy_arn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}"#;
        assert!(parse(both).unwrap_err()[0].message.contains("only one"));
        let none = r#"{"user_arn": "arn:aws:iam::123456789012:user/x"}"#;
        assert!(parse(none).unwrap_err()[0].message.contains("give one of"));
        let bad = r#"{"user_arn": "arn:aws:iam::123456789012:user/{{requester.email}}", "group_arn": "g"}"#;
        let e = parse(bad).unwrap_err();
        assert_eq!(
            e.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
            vec!["user_arn", "group_arn"]
        );
    }

    #[derive(Default)]
    struct Fake {
        calls: Vec<String>,
    }

    impl Host for Fake {
        fn put_user_policy(&mut self, u: &str, n: &str, _: &str) -> Result<(), AwsError> {
            self.calls.push(format!("put {u} {n}"));
            Ok(())
        }
        fn delete_user_policy(&mut self, u: &str, n: &str) -> Result<(), AwsError> {
            self.calls.push(format!("delete {u} {n}"));
            Err(AwsError::NoSuchEntity("gone".into()))
        }
        fn attach(&mut self, u: &str, p: &str) -> Result<(), AwsError> {
            self.calls.push(format!("attach {u} {p}"));
            Ok(())
        }
        fn detach(&mut self, u: &str, p: &str) -> Result<(), AwsError> {
            self.calls.push(format!("detach {u} {p}"));
            Ok(())
        }
        fn add_to_group(&mut self, u: &str, g: &str) -> Result<(), AwsError> {
            self.calls.push(format!("add {u} {g}"));
            Ok(())
        }
        fn remove_from_group(&mut self, u: &str, g: &str) -> Result<(), AwsError> {
            self.calls.push(format!("remove {u} {g}"));
            Ok(())
        }
    }

    #[test]
    fn revoke_removes_what_the_grant_added_even_after_the_settings_changed() {
        let user = "arn:aws:iam::123456789012:user/{{requester.id}}";
        let first = format!(
            r#"{{"user_arn": "{user}", "attach_policy_arn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}}"#
        );
        let later = format!(
            r#"{{"user_arn": "{user}", "group_arn": "arn:aws:iam::123456789012:group/oncall"}}"#
        );
        let mut h = Fake::default();
        let (handle, _) = grant(&mut h, &first, "alice", "r-1", 0).expect("grant");
        revoke(&mut h, &later, &handle, "alice", "r-1").expect("revoke");
        assert_eq!(
            h.calls,
            vec![
                "attach arn:aws:iam::123456789012:user/alice arn:aws:iam::aws:policy/ReadOnlyAccess",
                "detach arn:aws:iam::123456789012:user/alice arn:aws:iam::aws:policy/ReadOnlyAccess",
            ]
        );
        let (handle, _) = grant(&mut h, &later, "alice", "r-2", 0).expect("grant");
        revoke(&mut h, &first, &handle, "alice", "r-2").expect("revoke");
        assert_eq!(
            h.calls[3],
            "remove arn:aws:iam::123456789012:user/alice arn:aws:iam::123456789012:group/oncall"
        );
        let inline = format!(
            r#"{{"user_arn": "{user}", "inline_policy": {{"Statement": [{{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}}]}}}}"#
        );
        let (handle, _) = grant(&mut h, &inline, "alice", "r-3", 0).expect("grant");
        revoke(&mut h, &first, &handle, "alice", "r-3").expect("gone is a success");
        assert_eq!(
            h.calls[5],
            "delete arn:aws:iam::123456789012:user/alice sallyport-r-3"
        );
        // A rollback without a handle removes what the settings would have added.
        revoke(&mut h, &later, "{}", "alice", "r-4").expect("rollback");
        assert_eq!(
            h.calls[6],
            "remove arn:aws:iam::123456789012:user/alice arn:aws:iam::123456789012:group/oncall"
        );
    }

    #[test]
    fn every_allow_ends_at_the_grant() {
        let p = json!({"Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {"Effect": "Allow", "Action": "ec2:*", "Resource": "*", "Condition": {"DateLessThan": {"aws:CurrentTime": "2000-01-01T00:00:00Z"}}},
            {"Effect": "Deny", "Action": "iam:*", "Resource": "*"},
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*", "Condition": {"DateLessThan": {"aws:CurrentTime": "1900000000"}}}
        ]});
        let out = with_expiry(&p, 1_800_000_000_000);
        assert_eq!(
            out["Statement"][0]["Condition"]["DateLessThan"]["aws:CurrentTime"],
            "2027-01-15T08:00:00Z"
        );
        assert_eq!(
            out["Statement"][1]["Condition"]["DateLessThan"]["aws:CurrentTime"],
            "2000-01-01T00:00:00Z",
            "an earlier end stays"
        );
        assert!(out["Statement"][2].get("Condition").is_none());
        assert_eq!(
            out["Statement"][3]["Condition"]["DateLessThan"]["aws:CurrentTime"],
            "2027-01-15T08:00:00Z",
            "a time in another form (here 2030 in epoch seconds) is replaced, not compared as text"
        );
        assert_eq!(out["Version"], "2012-10-17");
        assert!(user_for("arn:aws:iam::1:user/{{requester.id}}", "a b").is_err());
    }
}
