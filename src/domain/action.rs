//! Action requests: approval of one specific action (a deployment, a migration) rather than a
//! role. An action request is a [`Request`](super::Request) with [`ActionDetails`]; it has the
//! same reviews, approval policy, time-out and audit as an access request, and no connector:
//!
//! ```text
//! Pending -> Active (approved: the attestation is valid until `valid_until`)
//! Active  -> Ended (consumed once, or withdrawn by its requester) | Expired | Revoked
//! Pending -> Denied | Cancelled | TimedOut
//! ```
//!
//! The parameters are checked against the action kind's schema and kept in canonical form: a
//! JSON object with its keys sorted and no whitespace, whose values are strings, integers or
//! booleans only (so the form is also RFC 8785's). Its SHA-256 is the digest an attestation
//! names, and that a service compares with the parameters it is about to act on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{DomainError, Millis};

/// Most parameters an action may carry.
pub const MAX_PARAMS: usize = 32;
/// Longest string parameter value.
pub const MAX_PARAM_LEN: usize = 1024;

/// Largest integer parameter (in absolute value): 2^53 - 1, so every JSON implementation (and
/// RFC 8785) reads it exactly.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Characters that render as nothing or reorder text: an approver must see what will run.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// A parameter's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    /// Text (no control characters).
    String,
    /// A whole number (64-bit signed).
    Integer,
    /// `true` or `false`.
    Boolean,
}

impl ParamType {
    /// The name used in the policy file.
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::Boolean => "boolean",
        }
    }

    /// Parse the policy file's name.
    pub fn parse(s: &str) -> Option<ParamType> {
        [ParamType::String, ParamType::Integer, ParamType::Boolean]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

/// One parameter of an action kind.
#[derive(Debug, Clone)]
pub struct ParamSpec {
    /// Its type.
    pub kind: ParamType,
    /// Must be given.
    pub required: bool,
    /// A string value must match it (whole value).
    pub pattern: Option<regex::Regex>,
    /// For people.
    pub description: String,
}

/// An action kind's parameter schema: names to specs. Unknown parameters are refused.
pub type ParamSchema = BTreeMap<String, ParamSpec>;

fn invalid(message: String) -> DomainError {
    DomainError::Invalid {
        field: "parameters",
        message,
    }
}

/// Check parameters against a schema and return them in canonical form. Strings given for
/// integer or boolean parameters (as the CLI sends them) are converted when they are exact
/// (`42`, `true`); anything else is refused with the parameter's name.
pub fn canonical_parameters(
    kind: &str,
    schema: &ParamSchema,
    given: &Map<String, Value>,
) -> Result<Map<String, Value>, DomainError> {
    if given.len() > MAX_PARAMS {
        return Err(invalid(format!("at most {MAX_PARAMS} parameters")));
    }
    let mut out = Map::new();
    for (name, value) in given {
        let Some(spec) = schema.get(name) else {
            let known: Vec<&str> = schema.keys().map(String::as_str).collect();
            return Err(invalid(format!(
                "`{kind}` has no parameter `{name}`; it takes: {}",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            )));
        };
        let wrong = || {
            invalid(format!(
                "`{name}` must be {} {}, not {}",
                if spec.kind == ParamType::Integer {
                    "an"
                } else {
                    "a"
                },
                spec.kind.as_str(),
                short(value)
            ))
        };
        let v = match (spec.kind, value) {
            (ParamType::String, Value::String(s)) => {
                if s.is_empty() {
                    return Err(invalid(format!("`{name}` must not be empty")));
                }
                if s.chars().count() > MAX_PARAM_LEN {
                    return Err(invalid(format!(
                        "`{name}` is longer than {MAX_PARAM_LEN} characters"
                    )));
                }
                if s.chars().any(|c| c.is_control() || invisible(c)) {
                    return Err(invalid(format!(
                        "`{name}` must not contain control, bidirectional or invisible characters"
                    )));
                }
                if let Some(re) = &spec.pattern
                    && !re.is_match(s)
                {
                    return Err(invalid(format!(
                        "`{name}` = {} does not match the pattern `{}`",
                        short(value),
                        re.as_str()
                    )));
                }
                Value::String(s.clone())
            }
            (ParamType::Integer, Value::Number(n)) => Value::from(
                n.as_i64()
                    .filter(|i| i.unsigned_abs() <= MAX_SAFE_INTEGER)
                    .ok_or_else(wrong)?,
            ),
            (ParamType::Integer, Value::String(s)) => {
                let n: i64 = s.parse().map_err(|_| wrong())?;
                if n.to_string() != *s || n.unsigned_abs() > MAX_SAFE_INTEGER {
                    return Err(wrong());
                }
                Value::from(n)
            }
            (ParamType::Boolean, Value::Bool(b)) => Value::Bool(*b),
            (ParamType::Boolean, Value::String(s)) if s == "true" || s == "false" => {
                Value::Bool(s == "true")
            }
            _ => return Err(wrong()),
        };
        out.insert(name.clone(), v);
    }
    let missing: Vec<&str> = schema
        .iter()
        .filter(|(n, s)| s.required && !out.contains_key(*n))
        .map(|(n, _)| n.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(invalid(format!(
            "`{kind}` requires {}: {}",
            if missing.len() == 1 {
                "the parameter"
            } else {
                "the parameters"
            },
            missing.join(", ")
        )));
    }
    // serde_json's map keeps keys sorted: `out` is already in canonical order.
    Ok(out)
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

/// The canonical text of parameters: keys sorted, no whitespace.
pub fn canonical_text(params: &Map<String, Value>) -> String {
    let sorted: BTreeMap<&String, &Value> = params.iter().collect();
    serde_json::to_string(&sorted).unwrap_or_default()
}

/// `sha256:<hex>` of the canonical text: what an attestation names.
pub fn digest(params: &Map<String, Value>) -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(canonical_text(params).as_bytes()))
    )
}

/// The pipeline that asked, from its verified workload token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    /// The token's issuer.
    pub issuer: String,
    /// Its subject, e.g. `repo:acme/app:ref:refs/heads/main`.
    pub subject: String,
    /// The audience it was issued for.
    pub audience: String,
    /// The token's id, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// Who started the pipeline, when the issuer says (GitHub's `actor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
}

/// What makes a request an action request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionDetails {
    /// The parameters, canonical.
    pub parameters: Map<String, Value>,
    /// `sha256:<hex>` of their canonical text.
    pub digest: String,
    /// The pipeline that asked, when a workload token was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<Workload>,
    /// When it was approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_at: Option<Millis>,
    /// The approval (and its attestation) is valid until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<Millis>,
    /// When its attestation was consumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumed_at: Option<Millis>,
    /// Who consumed it (`user:<id>` or `attestation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumed_by: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> ParamSchema {
        let mut s = ParamSchema::new();
        s.insert(
            "version".into(),
            ParamSpec {
                kind: ParamType::String,
                required: true,
                pattern: Some(regex::Regex::new(r"^v[0-9]+\.[0-9]+\.[0-9]+$").expect("re")),
                description: String::new(),
            },
        );
        s.insert(
            "replicas".into(),
            ParamSpec {
                kind: ParamType::Integer,
                required: false,
                pattern: None,
                description: String::new(),
            },
        );
        s.insert(
            "dry_run".into(),
            ParamSpec {
                kind: ParamType::Boolean,
                required: false,
                pattern: None,
                description: String::new(),
            },
        );
        s
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn parameters_are_typed_and_canonical() {
        let p = canonical_parameters(
            "deploy/prod",
            &schema(),
            &obj(json!({"version": "v1.2.3", "replicas": "3", "dry_run": "false"})),
        )
        .expect("valid");
        assert_eq!(
            canonical_text(&p),
            r#"{"dry_run":false,"replicas":3,"version":"v1.2.3"}"#
        );
        let same = canonical_parameters(
            "deploy/prod",
            &schema(),
            &obj(json!({"replicas": 3, "version": "v1.2.3", "dry_run": false})),
        )
        .expect("valid");
        assert_eq!(digest(&p), digest(&same));
        assert_eq!(
            digest(&p),
            format!(
                "sha256:{}",
                hex::encode(Sha256::digest(
                    br#"{"dry_run":false,"replicas":3,"version":"v1.2.3"}"#
                ))
            )
        );
    }

    #[test]
    fn schema_breaking_parameters_are_refused() {
        let s = schema();
        for (given, needle) in [
            (json!({}), "requires the parameter: version"),
            (json!({"version": "1.2.3"}), "does not match the pattern"),
            (
                json!({"version": "v1.2.3", "replicas": "three"}),
                "must be an integer",
            ),
            (
                json!({"version": "v1.2.3", "replicas": "03"}),
                "must be an integer",
            ),
            (
                json!({"version": "v1.2.3", "replicas": 1.5}),
                "must be an integer",
            ),
            (
                json!({"version": "v1.2.3", "dry_run": "yes"}),
                "must be a boolean",
            ),
            (
                json!({"version": "v1.2.3", "colour": "red"}),
                "has no parameter `colour`",
            ),
            (json!({"version": 7}), "must be a string"),
            (json!({"version": "v1.2.3\n"}), "control"),
            (json!({"version": "v1.2.3\u{202e}"}), "bidirectional"),
            (
                json!({"version": "v1.2.3", "replicas": 9_007_199_254_740_992_i64}),
                "must be an integer",
            ),
        ] {
            let e = canonical_parameters("deploy/prod", &s, &obj(given.clone()))
                .expect_err(&given.to_string());
            assert!(e.to_string().contains(needle), "{given}: {e}");
        }
    }
}
