//! The connector's settings: parsed by hand from JSON so that every problem is reported, each
//! with the path of the offending value (`grant.url`, `revoke.headers.authorization.secret`...).

use serde_json::{Map, Value};

use crate::template::{JsonTemplate, Phase, Template};

/// The default and the bounds of `timeout_ms`.
pub const DEFAULT_TIMEOUT_MS: u32 = 10_000;
const MAX_TIMEOUT_MS: u64 = 30_000;

/// A complaint about the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    /// Where, e.g. `grant.url` (empty for the whole document).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// An HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    fn parse(s: &str) -> Option<Method> {
        Some(match s.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            _ => return None,
        })
    }

    /// The method's name, upper case.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// A configured header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderSpec {
    /// A literal value, which may name variables.
    Text(Template),
    /// A secret the host injects by name.
    Secret(String),
}

/// One configured HTTP call.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub method: Method,
    pub url: Template,
    /// Header names as written, in order.
    pub headers: Vec<(String, HeaderSpec)>,
    pub body: Option<JsonTemplate>,
    /// Statuses that mean success; `None` is any 2xx.
    pub expect_status: Option<Vec<u16>>,
    /// Revoke only: statuses that mean "already gone", also a success.
    pub gone_status: Vec<u16>,
}

impl Call {
    /// True when `status` means the call did what it should.
    pub fn succeeded(&self, status: u16) -> bool {
        match &self.expect_status {
            Some(list) => list.contains(&status),
            None => (200..300).contains(&status),
        }
    }
}

/// The connector's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub grant: Call,
    pub revoke: Call,
    pub timeout_ms: u32,
}

/// Headers the HTTP stack sets itself.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
];

struct Errors(Vec<SettingError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(SettingError {
            path: path.into(),
            message: message.into(),
        });
    }
}

fn child(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

fn check_keys(map: &Map<String, Value>, path: &str, allowed: &[&str], errors: &mut Errors) {
    for key in map.keys() {
        if !allowed.contains(&key.as_str()) {
            errors.push(
                child(path, key),
                format!(
                    "unknown key `{key}`; expected one of: {}",
                    allowed.join(", ")
                ),
            );
        }
    }
}

/// Parses and checks settings, reporting every problem found.
pub fn parse(text: &str) -> Result<Settings, Vec<SettingError>> {
    let mut errors = Errors(Vec::new());
    let doc: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            errors.push("", format!("the settings are not valid JSON: {e}"));
            return Err(errors.0);
        }
    };
    let Value::Object(map) = &doc else {
        errors.push(
            "",
            "the settings must be a JSON object with `grant` and `revoke`",
        );
        return Err(errors.0);
    };
    check_keys(map, "", &["grant", "revoke", "timeout_ms"], &mut errors);

    let grant = match map.get("grant") {
        Some(v) => parse_call(v, "grant", Phase::Grant, &mut errors),
        None => {
            errors.push("grant", "required: the HTTP request that grants access");
            None
        }
    };
    let revoke = match map.get("revoke") {
        Some(v) => parse_call(v, "revoke", Phase::Revoke, &mut errors),
        None => {
            errors.push(
                "revoke",
                "required: the HTTP request that takes access away",
            );
            None
        }
    };
    let timeout_ms = match map.get("timeout_ms") {
        None => DEFAULT_TIMEOUT_MS,
        Some(v) => match v.as_u64() {
            Some(n @ 1..=MAX_TIMEOUT_MS) => u32::try_from(n).unwrap_or(DEFAULT_TIMEOUT_MS),
            _ => {
                errors.push("timeout_ms", format!("expected a whole number of milliseconds from 1 to {MAX_TIMEOUT_MS}, found {v}"));
                DEFAULT_TIMEOUT_MS
            }
        },
    };
    match (grant, revoke) {
        (Some(grant), Some(revoke)) if errors.0.is_empty() => Ok(Settings {
            grant,
            revoke,
            timeout_ms,
        }),
        _ => Err(errors.0),
    }
}

fn parse_call(value: &Value, path: &str, phase: Phase, errors: &mut Errors) -> Option<Call> {
    let Value::Object(map) = value else {
        errors.push(path, "expected an object with at least `url`");
        return None;
    };
    let before = errors.0.len();
    let allowed: &[&str] = match phase {
        Phase::Grant => &["method", "url", "headers", "body", "expect_status"],
        Phase::Revoke => &[
            "method",
            "url",
            "headers",
            "body",
            "expect_status",
            "gone_status",
        ],
    };
    check_keys(map, path, allowed, errors);

    let method = match map.get("method") {
        None => match phase {
            Phase::Grant => Method::Post,
            Phase::Revoke => Method::Delete,
        },
        Some(v) => match v.as_str().and_then(Method::parse) {
            Some(m) => m,
            None => {
                errors.push(
                    child(path, "method"),
                    format!("expected one of GET, HEAD, POST, PUT, PATCH, DELETE; found {v}"),
                );
                Method::Post // no knock-on "cannot have a body" error
            }
        },
    };

    let url = match map.get("url") {
        None => {
            errors.push(
                child(path, "url"),
                "required: an absolute http or https URL",
            );
            None
        }
        Some(Value::String(s)) => parse_url(s, &child(path, "url"), phase, errors),
        Some(v) => {
            errors.push(child(path, "url"), format!("expected a string, found {v}"));
            None
        }
    };

    let headers = match map.get("headers") {
        None => Vec::new(),
        Some(v) => parse_headers(v, &child(path, "headers"), phase, errors),
    };

    let body = match map.get("body") {
        None | Some(Value::Null) => None,
        Some(v) => {
            if matches!(method, Method::Get | Method::Head) {
                errors.push(
                    child(path, "body"),
                    format!("a {} request cannot have a body", method.as_str()),
                );
            }
            let mut found = Vec::new();
            let body = JsonTemplate::parse(v, phase, &child(path, "body"), &mut found);
            for (p, m) in found {
                errors.push(p, m);
            }
            Some(body)
        }
    };

    let expect_status = map
        .get("expect_status")
        .map(|v| parse_statuses(v, &child(path, "expect_status"), errors));
    let gone_status = match map.get("gone_status") {
        Some(v) => parse_statuses(v, &child(path, "gone_status"), errors),
        None => vec![404, 410],
    };

    let url = url?;
    (errors.0.len() == before).then_some(Call {
        method,
        url,
        headers,
        body,
        expect_status,
        gone_status,
    })
}

fn push_template_errors(path: &str, found: Vec<String>, errors: &mut Errors) {
    for m in found {
        errors.push(path, m);
    }
}

fn parse_url(text: &str, path: &str, phase: Phase, errors: &mut Errors) -> Option<Template> {
    let template = match Template::parse(text, phase) {
        Ok(t) => t,
        Err(found) => {
            push_template_errors(path, found, errors);
            return None;
        }
    };
    let before = errors.0.len();
    if template
        .literals()
        .any(|l| l.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        errors.push(
            path,
            "the URL must not contain spaces or control characters; percent-encode them",
        );
    }
    let prefix = template.literal_prefix();
    let lower = prefix.to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        Some(&prefix[8..])
    } else if lower.starts_with("http://") {
        Some(&prefix[7..])
    } else {
        None
    };
    match rest {
        None => errors.push(
            path,
            format!("expected an absolute http:// or https:// URL, found `{text}`"),
        ),
        Some(rest) => {
            let end = rest.find(['/', '?', '#']);
            let authority = &rest[..end.unwrap_or(rest.len())];
            if end.is_none() && template.has_vars() {
                errors.push(path, "placeholders may only appear in the path, query or fragment: the origin must be fixed so the operator can allow it");
            } else if authority.is_empty() {
                errors.push(path, format!("the URL has no host: `{text}`"));
            } else if authority.contains('@') {
                errors.push(path, "credentials do not belong in the URL; send them in a header with {\"secret\": \"name\"}");
            }
        }
    }
    (errors.0.len() == before).then_some(template)
}

fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn parse_headers(
    value: &Value,
    path: &str,
    phase: Phase,
    errors: &mut Errors,
) -> Vec<(String, HeaderSpec)> {
    let Value::Object(map) = value else {
        errors.push(path, "expected an object of header names to values");
        return Vec::new();
    };
    let mut headers = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for (name, v) in map {
        let hpath = child(path, name);
        let lower = name.to_ascii_lowercase();
        if !is_token(name) {
            errors.push(&hpath, format!("`{name}` is not a valid header name"));
        } else if RESERVED_HEADERS.contains(&lower.as_str()) {
            errors.push(
                &hpath,
                format!("`{name}` is set by the HTTP stack and cannot be configured"),
            );
        } else if seen.contains(&lower) {
            errors.push(
                &hpath,
                format!(
                    "header `{name}` is given more than once (header names are case-insensitive)"
                ),
            );
        }
        seen.push(lower);
        let spec = match v {
            Value::String(s) => {
                if s.contains(['\r', '\n', '\0']) {
                    errors.push(&hpath, "a header value cannot contain a line break or NUL");
                    continue;
                }
                match Template::parse(s, phase) {
                    Ok(t) => HeaderSpec::Text(t),
                    Err(found) => {
                        push_template_errors(&hpath, found, errors);
                        continue;
                    }
                }
            }
            Value::Object(obj) => {
                check_keys(obj, &hpath, &["secret"], errors);
                match obj.get("secret") {
                    Some(Value::String(s)) if s.trim().is_empty() => {
                        errors.push(child(&hpath, "secret"), "the secret name cannot be empty");
                        continue;
                    }
                    Some(Value::String(s)) if s.contains("{{") => {
                        errors.push(
                            child(&hpath, "secret"),
                            "secret names are literal: placeholders are not substituted here",
                        );
                        continue;
                    }
                    Some(Value::String(s)) => HeaderSpec::Secret(s.clone()),
                    Some(other) => {
                        errors.push(
                            child(&hpath, "secret"),
                            format!("expected the name of a secret (a string), found {other}"),
                        );
                        continue;
                    }
                    None => {
                        errors.push(&hpath, "expected {\"secret\": \"name\"}");
                        continue;
                    }
                }
            }
            other => {
                errors.push(
                    &hpath,
                    format!("expected a string or {{\"secret\": \"name\"}}, found {other}"),
                );
                continue;
            }
        };
        headers.push((name.clone(), spec));
    }
    headers
}

fn parse_statuses(value: &Value, path: &str, errors: &mut Errors) -> Vec<u16> {
    let Value::Array(items) = value else {
        errors.push(
            path,
            format!("expected a list of HTTP status codes, e.g. [200, 201]; found {value}"),
        );
        return Vec::new();
    };
    if items.is_empty() {
        errors.push(
            path,
            "the list cannot be empty; leave the key out for the default",
        );
    }
    let mut statuses = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item.as_u64() {
            Some(n @ 100..=599) => statuses.push(u16::try_from(n).unwrap_or_default()),
            _ => errors.push(
                format!("{path}[{i}]"),
                format!("expected an HTTP status code from 100 to 599, found {item}"),
            ),
        }
    }
    statuses
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::Var;
    use serde_json::json;

    fn example() -> Value {
        json!({
            "grant": {
                "method": "POST",
                "url": "https://target.internal/grants",
                "headers": { "content-type": "application/json", "authorization": { "secret": "target_token" } },
                "body": { "user": "{{requester.id}}", "role": "{{request.entitlement}}", "until": "{{expires_at}}", "seconds": "{{request.duration_seconds}}" },
                "expect_status": [200, 201]
            },
            "revoke": {
                "method": "DELETE",
                "url": "https://target.internal/grants/{{grant.response.id}}",
                "headers": { "authorization": { "secret": "target_token" } },
                "gone_status": [404, 410]
            },
            "timeout_ms": 10000
        })
    }

    fn errors_of(v: Value) -> Vec<(String, String)> {
        match parse(&v.to_string()) {
            Ok(_) => Vec::new(),
            Err(es) => es.into_iter().map(|e| (e.path, e.message)).collect(),
        }
    }

    fn paths_of(v: Value) -> Vec<String> {
        errors_of(v).into_iter().map(|(p, _)| p).collect()
    }

    #[test]
    fn parses_the_documented_example() {
        let s = parse(&example().to_string()).expect("valid");
        assert_eq!(s.grant.method, Method::Post);
        assert_eq!(s.revoke.method, Method::Delete);
        assert_eq!(s.timeout_ms, 10_000);
        assert_eq!(s.grant.expect_status, Some(vec![200, 201]));
        assert_eq!(s.revoke.expect_status, None);
        assert_eq!(s.revoke.gone_status, vec![404, 410]);
        assert_eq!(s.grant.headers.len(), 2);
        assert!(
            s.grant
                .headers
                .iter()
                .any(|(n, h)| n == "authorization"
                    && *h == HeaderSpec::Secret("target_token".into()))
        );
        assert_eq!(
            s.revoke.url.single_var(),
            None,
            "the revoke URL mixes literal text and a placeholder"
        );
        assert!(
            s.revoke
                .url
                .0
                .contains(&crate::template::Segment::Var(Var::GrantResponse(vec![
                    "id".into()
                ])))
        );
    }

    #[test]
    fn defaults() {
        let s = parse(r#"{"grant": {"url": "https://t.example/g"}, "revoke": {"url": "http://t.example:8080/g"}}"#).expect("valid");
        assert_eq!(s.grant.method, Method::Post);
        assert_eq!(s.revoke.method, Method::Delete);
        assert_eq!(s.timeout_ms, DEFAULT_TIMEOUT_MS);
        assert!(s.grant.succeeded(200) && s.grant.succeeded(204) && s.grant.succeeded(299));
        assert!(!s.grant.succeeded(199) && !s.grant.succeeded(300) && !s.grant.succeeded(404));
        assert_eq!(s.revoke.gone_status, vec![404, 410]);
        let s = parse(r#"{"grant": {"method": "put", "url": "HTTPS://t.example/g"}, "revoke": {"method": "Patch", "url": "https://t.example/g"}}"#).expect("valid");
        assert_eq!(
            (s.grant.method, s.revoke.method),
            (Method::Put, Method::Patch)
        );
    }

    #[test]
    fn whole_document_errors() {
        assert_eq!(paths_of(json!([1])), vec![""]);
        let e = parse("{not json").unwrap_err();
        assert_eq!(e[0].path, "");
        assert!(e[0].message.contains("not valid JSON"));
        assert_eq!(paths_of(json!({})), vec!["grant", "revoke"]);
    }

    #[test]
    fn unknown_keys_are_errors_with_paths() {
        let mut v = example();
        v["extra"] = json!(1);
        v["grant"]["gone_status"] = json!([404]); // revoke only
        v["grant"]["expect"] = json!([200]);
        v["revoke"]["headers"]["authorization"]["secrett"] = json!("x");
        let errs = errors_of(v);
        let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "extra",
                "grant.expect",
                "grant.gone_status",
                "revoke.headers.authorization.secrett"
            ]
        );
        assert!(errs[0].1.contains("unknown key `extra`"));
    }

    #[test]
    fn collects_every_error_with_precise_paths() {
        let v = json!({
            "grant": {
                "method": "FETCH",
                "url": "ftp://target.internal/grants",
                "headers": { "bad name": "x", "x-who": "{{requester.nope}}", "x-n": 5, "authorization": { "secret": "" } },
                "body": { "user": "{{requester.id}}", "list": ["{{grant.status}}"] },
                "expect_status": [200, 700, "201"]
            },
            "revoke": {
                "url": "https://target.internal/grants/{{expires_at}}",
                "headers": { "authorization": { "secret": 3 }, "Host": "x" },
                "gone_status": []
            },
            "timeout_ms": 60000
        });
        let errs = errors_of(v);
        let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "grant.method",
                "grant.url",
                "grant.headers.authorization.secret",
                "grant.headers.bad name",
                "grant.headers.x-n",
                "grant.headers.x-who",
                "grant.body.list[0]",
                "grant.expect_status[1]",
                "grant.expect_status[2]",
                "revoke.url",
                "revoke.headers.Host",
                "revoke.headers.authorization.secret",
                "revoke.gone_status",
                "timeout_ms",
            ],
            "{errs:#?}"
        );
        let msg = |p: &str| {
            errs.iter()
                .find(|(q, _)| q == p)
                .map(|(_, m)| m.clone())
                .unwrap_or_default()
        };
        assert!(msg("grant.url").contains("absolute http"));
        assert!(msg("grant.headers.x-who").contains("unknown variable `{{requester.nope}}`"));
        assert!(msg("grant.body.list[0]").contains("only available in revoke"));
        assert!(msg("revoke.url").contains("only available in grant"));
        assert!(msg("timeout_ms").contains("1 to 30000"));
    }

    #[test]
    fn url_checks() {
        let with_url =
            |url: &str| json!({"grant": {"url": url}, "revoke": {"url": "https://t.example/x"}});
        let msg = |url: &str| {
            errors_of(with_url(url))
                .into_iter()
                .map(|(_, m)| m)
                .collect::<Vec<_>>()
                .join(" | ")
        };
        assert!(msg("https://{{requester.id}}.t.example/x").contains("origin must be fixed"));
        assert!(msg("https://t.example{{request.id}}").contains("origin must be fixed"));
        assert!(msg("https://user:pw@t.example/x").contains("credentials do not belong"));
        assert!(msg("https:///x").contains("no host"));
        assert!(msg("https://t.example/a b").contains("spaces"));
        assert!(msg("/relative").contains("absolute"));
        assert!(msg("{{request.id}}").contains("absolute"));
        assert!(msg("https://t.example/x?u={{requester.id}}").is_empty());
        assert!(msg("https://t.example?u={{requester.id}}").is_empty());
        assert!(msg("https://t.example/{{requester.id}").contains("unterminated"));
    }

    #[test]
    fn header_and_body_checks() {
        let v = json!({
            "grant": {"method": "get", "url": "https://t.example/x", "body": {"a": 1},
                      "headers": {"X-A": "1", "x-a": "2", "x-b": "a\r\nb", "x-c": {"secret": "{{requester.id}}"}, "x-d": {}}},
            "revoke": {"url": "https://t.example/x"}
        });
        let errs = errors_of(v);
        let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "grant.headers.x-a",
                "grant.headers.x-b",
                "grant.headers.x-c.secret",
                "grant.headers.x-d",
                "grant.body"
            ],
            "{errs:#?}"
        );
        assert!(errs[0].1.contains("more than once"));
        assert!(errs[4].1.contains("GET request cannot have a body"));
    }
}
