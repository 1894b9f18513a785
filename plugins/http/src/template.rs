//! `{{name}}` templates and the variables they may name.
//!
//! Templates are parsed once, when the settings are read, so an unknown variable is reported by
//! `validate` with the path of the string that names it. Rendering depends on where the text goes:
//!
//! - URLs: substituted values are percent-encoded (everything but RFC 3986 unreserved characters),
//!   so they can never add a path segment, a query parameter or change the origin;
//! - header values: a substituted value holding CR, LF or NUL is refused;
//! - JSON bodies: the parsed template is walked and only string values (and keys) are substituted,
//!   so a value can never break the JSON structure. A string that is exactly one placeholder of a
//!   numeric variable becomes a JSON number; exactly one `grant.response.*` placeholder inserts
//!   the stored JSON value as is.

use serde_json::{Map, Number, Value};

/// Which call a template belongs to: some variables only exist for one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `grant`.
    Grant,
    /// `revoke`.
    Revoke,
}

/// A variable a template may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    RequestId,
    RequestEntitlement,
    RequestDurationSeconds,
    RequestJustification,
    RequestTicket,
    RequesterId,
    RequesterEmail,
    RequesterDisplayName,
    ExpiresAt,
    ExpiresAtMs,
    Now,
    Reason,
    GrantStatus,
    /// `grant.response` followed by a dot path into the grant's stored response (object keys,
    /// or decimal indexes into arrays). An empty path is the whole response.
    GrantResponse(Vec<String>),
}

/// When a variable is available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Both,
    GrantOnly,
    RevokeOnly,
}

const FIXED: &[(&str, Var, Scope)] = &[
    ("request.id", Var::RequestId, Scope::Both),
    ("request.entitlement", Var::RequestEntitlement, Scope::Both),
    (
        "request.duration_seconds",
        Var::RequestDurationSeconds,
        Scope::Both,
    ),
    (
        "request.justification",
        Var::RequestJustification,
        Scope::Both,
    ),
    ("request.ticket", Var::RequestTicket, Scope::Both),
    ("requester.id", Var::RequesterId, Scope::Both),
    ("requester.email", Var::RequesterEmail, Scope::Both),
    (
        "requester.display_name",
        Var::RequesterDisplayName,
        Scope::Both,
    ),
    ("expires_at", Var::ExpiresAt, Scope::GrantOnly),
    ("expires_at_ms", Var::ExpiresAtMs, Scope::GrantOnly),
    ("now", Var::Now, Scope::Both),
    ("reason", Var::Reason, Scope::RevokeOnly),
    ("grant.status", Var::GrantStatus, Scope::RevokeOnly),
];

/// The variable list quoted in error messages.
pub const KNOWN_VARIABLES: &str = "request.id, request.entitlement, request.duration_seconds, \
    request.justification, request.ticket, requester.id, requester.email, \
    requester.display_name, now, expires_at and expires_at_ms (grant only), reason, grant.status \
    and grant.response.<path> (revoke only)";

impl Var {
    /// Parses a placeholder name, checking it is available in `phase`.
    pub fn parse(name: &str, phase: Phase) -> Result<Var, String> {
        let (var, scope) = if let Some((_, var, scope)) = FIXED.iter().find(|(n, _, _)| *n == name)
        {
            (var.clone(), *scope)
        } else if name == "grant.response" {
            (Var::GrantResponse(Vec::new()), Scope::RevokeOnly)
        } else if let Some(path) = name.strip_prefix("grant.response.") {
            let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
            if segments.iter().any(String::is_empty) {
                return Err(format!(
                    "`{{{{{name}}}}}` has an empty path segment; write e.g. `{{{{grant.response.data.id}}}}`"
                ));
            }
            (Var::GrantResponse(segments), Scope::RevokeOnly)
        } else {
            return Err(format!(
                "unknown variable `{{{{{name}}}}}`; known variables: {KNOWN_VARIABLES}"
            ));
        };
        match (scope, phase) {
            (Scope::GrantOnly, Phase::Revoke) => Err(format!(
                "`{{{{{name}}}}}` is only available in grant: revoke is not told when the grant would have ended"
            )),
            (Scope::RevokeOnly, Phase::Grant) => Err(format!(
                "`{{{{{name}}}}}` is only available in revoke{}",
                if name.starts_with("grant.") {
                    ": it comes from the grant's own response"
                } else {
                    ""
                }
            )),
            _ => Ok(var),
        }
    }

    /// The placeholder name, as written in settings.
    pub fn name(&self) -> String {
        match self {
            Var::GrantResponse(path) if path.is_empty() => "grant.response".to_owned(),
            Var::GrantResponse(path) => format!("grant.response.{}", path.join(".")),
            fixed => FIXED
                .iter()
                .find(|(_, v, _)| v == fixed)
                .map(|(n, _, _)| (*n).to_owned())
                .unwrap_or_default(),
        }
    }

    /// True for the variables whose value comes from the grant's stored handle.
    fn comes_from_grant(&self) -> bool {
        matches!(self, Var::GrantStatus | Var::GrantResponse(_))
    }
}

/// A piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Literal text.
    Lit(String),
    /// A `{{variable}}`.
    Var(Var),
}

/// A parsed `{{name}}` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(pub Vec<Segment>);

impl Template {
    /// Parses `text`; every problem found is returned, not just the first.
    pub fn parse(text: &str, phase: Phase) -> Result<Template, Vec<String>> {
        let mut segments = Vec::new();
        let mut errors = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                segments.push(Segment::Lit(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                errors.push(format!(
                    "unterminated placeholder: `{{{{` without a closing `}}}}` in `{text}`"
                ));
                rest = "";
                break;
            };
            let raw = &after[..end];
            let name = raw.trim();
            if name.is_empty() {
                errors.push("empty placeholder `{{}}`".to_owned());
            } else if name.contains(['{', '}']) {
                errors.push(format!("malformed placeholder `{{{{{raw}}}}}`"));
            } else {
                match Var::parse(name, phase) {
                    Ok(var) => segments.push(Segment::Var(var)),
                    Err(e) => errors.push(e),
                }
            }
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Lit(rest.to_owned()));
        }
        if errors.is_empty() {
            Ok(Template(segments))
        } else {
            Err(errors)
        }
    }

    /// The variable, when the template is exactly one placeholder and nothing else.
    pub fn single_var(&self) -> Option<&Var> {
        match self.0.as_slice() {
            [Segment::Var(v)] => Some(v),
            _ => None,
        }
    }

    /// True when the template names at least one variable.
    pub fn has_vars(&self) -> bool {
        self.0.iter().any(|s| matches!(s, Segment::Var(_)))
    }

    /// The literal text before the first placeholder.
    pub fn literal_prefix(&self) -> &str {
        match self.0.first() {
            Some(Segment::Lit(s)) => s,
            _ => "",
        }
    }

    /// All literal text, placeholders dropped.
    pub fn literals(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|s| match s {
            Segment::Lit(l) => Some(l.as_str()),
            Segment::Var(_) => None,
        })
    }

    /// Renders the template as plain text: missing values are empty.
    pub fn render_text(&self, vars: &Vars) -> String {
        let mut out = String::new();
        for seg in &self.0 {
            match seg {
                Segment::Lit(l) => out.push_str(l),
                Segment::Var(v) => out.push_str(&vars.resolve(v).into_text()),
            }
        }
        out
    }

    /// Renders a URL: substituted values are percent-encoded. A `grant.*` value that is missing
    /// or empty is an error rather than an empty path segment (which could address the whole
    /// collection), as is a value of `.` or `..` (which would move up the path).
    pub fn render_url(&self, vars: &Vars) -> Result<String, String> {
        let mut out = String::new();
        for seg in &self.0 {
            match seg {
                Segment::Lit(l) => out.push_str(l),
                Segment::Var(v) => {
                    let value = vars.resolve(v);
                    let missing = matches!(value, Resolved::Missing);
                    let text = value.into_text();
                    if missing || (v.comes_from_grant() && text.is_empty()) {
                        return Err(format!(
                            "the URL needs `{{{{{}}}}}`, but {}; nothing was sent",
                            v.name(),
                            if v.comes_from_grant() {
                                "the grant's stored response has no such value (a rollback of a \
                                 grant that returned nothing, or a response without that field)"
                            } else {
                                "it has no value here"
                            }
                        ));
                    }
                    if text == "." || text == ".." {
                        return Err(format!(
                            "the value of `{{{{{}}}}}` is `{text}`, which would change the URL's path; nothing was sent",
                            v.name()
                        ));
                    }
                    percent_encode_into(&text, &mut out);
                }
            }
        }
        Ok(out)
    }

    /// Renders a header value, refusing substituted values that hold CR, LF or NUL.
    pub fn render_header(&self, vars: &Vars) -> Result<String, String> {
        let mut out = String::new();
        for seg in &self.0 {
            match seg {
                Segment::Lit(l) => out.push_str(l),
                Segment::Var(v) => {
                    let text = vars.resolve(v).into_text();
                    if text.contains(['\r', '\n', '\0']) {
                        return Err(format!(
                            "the value of `{{{{{}}}}}` contains a line break or NUL, which cannot be sent in a header",
                            v.name()
                        ));
                    }
                    out.push_str(&text);
                }
            }
        }
        Ok(out)
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`).
pub fn percent_encode_into(value: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

/// A JSON body template: strings (and keys) are templates, everything else is constant.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonTemplate {
    /// A value with nothing to substitute.
    Const(Value),
    /// A string with placeholders.
    Text(Template),
    /// An array.
    Array(Vec<JsonTemplate>),
    /// An object, keys in order.
    Object(Vec<(Template, JsonTemplate)>),
}

impl JsonTemplate {
    /// Parses every string in `value` as a template. Problems are pushed to `errors` as
    /// `(path, message)` with paths like `grant.body.user` or `grant.body.items[0]`.
    pub fn parse(
        value: &Value,
        phase: Phase,
        path: &str,
        errors: &mut Vec<(String, String)>,
    ) -> JsonTemplate {
        match value {
            Value::String(s) => match Template::parse(s, phase) {
                Ok(t) if t.has_vars() => JsonTemplate::Text(t),
                Ok(_) => JsonTemplate::Const(value.clone()),
                Err(es) => {
                    errors.extend(es.into_iter().map(|e| (path.to_owned(), e)));
                    JsonTemplate::Const(Value::Null)
                }
            },
            Value::Array(items) => JsonTemplate::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| JsonTemplate::parse(v, phase, &format!("{path}[{i}]"), errors))
                    .collect(),
            ),
            Value::Object(map) => JsonTemplate::Object(
                map.iter()
                    .map(|(k, v)| {
                        let child = format!("{path}.{k}");
                        let key = Template::parse(k, phase).unwrap_or_else(|es| {
                            errors.extend(
                                es.into_iter()
                                    .map(|e| (child.clone(), format!("in the key: {e}"))),
                            );
                            Template(Vec::new())
                        });
                        (key, JsonTemplate::parse(v, phase, &child, errors))
                    })
                    .collect(),
            ),
            other => JsonTemplate::Const(other.clone()),
        }
    }

    /// Renders the body.
    pub fn render(&self, vars: &Vars) -> Value {
        match self {
            JsonTemplate::Const(v) => v.clone(),
            JsonTemplate::Text(t) => match t.single_var() {
                Some(var) => match vars.resolve(var) {
                    Resolved::Text(s) => Value::String(s),
                    Resolved::Number(n) => Value::Number(n),
                    Resolved::Json(v) => v,
                    Resolved::Missing => Value::Null,
                },
                None => Value::String(t.render_text(vars)),
            },
            JsonTemplate::Array(items) => {
                Value::Array(items.iter().map(|i| i.render(vars)).collect())
            }
            JsonTemplate::Object(entries) => {
                let mut map = Map::new();
                for (k, v) in entries {
                    map.insert(k.render_text(vars), v.render(vars));
                }
                Value::Object(map)
            }
        }
    }
}

/// A variable's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolved {
    /// A string.
    Text(String),
    /// A number: a JSON number when it is a whole body string.
    Number(Number),
    /// A JSON value from the grant's stored response (not a string, number or null).
    Json(Value),
    /// No value (a `grant.*` value the stored handle lacks).
    Missing,
}

impl Resolved {
    fn into_text(self) -> String {
        match self {
            Resolved::Text(s) => s,
            Resolved::Number(n) => n.to_string(),
            Resolved::Json(v) => v.to_string(),
            Resolved::Missing => String::new(),
        }
    }
}

/// The values of every variable for one call.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    pub request_id: String,
    pub entitlement: String,
    pub duration_seconds: u64,
    pub justification: String,
    /// Empty when the request has no ticket.
    pub ticket: String,
    pub requester_id: String,
    /// Empty when the identity provider gave none.
    pub requester_email: String,
    /// Falls back to the requester's id.
    pub requester_display_name: String,
    /// Grant only.
    pub expires_at_ms: Option<i64>,
    pub now_ms: i64,
    /// Revoke only: `expired`, `revoked`, `ended` or `rollback`.
    pub reason: Option<&'static str>,
    /// Revoke only: the grant's status, when the handle has one.
    pub grant_status: Option<u16>,
    /// Revoke only: the grant's response (`null` when none).
    pub grant_response: Value,
}

impl Vars {
    /// The value of `var`.
    pub fn resolve(&self, var: &Var) -> Resolved {
        let text = |s: &str| Resolved::Text(s.to_owned());
        match var {
            Var::RequestId => text(&self.request_id),
            Var::RequestEntitlement => text(&self.entitlement),
            Var::RequestDurationSeconds => Resolved::Number(self.duration_seconds.into()),
            Var::RequestJustification => text(&self.justification),
            Var::RequestTicket => text(&self.ticket),
            Var::RequesterId => text(&self.requester_id),
            Var::RequesterEmail => text(&self.requester_email),
            Var::RequesterDisplayName => text(&self.requester_display_name),
            Var::ExpiresAt => self.expires_at_ms.map_or(Resolved::Missing, |ms| {
                Resolved::Text(crate::time::rfc3339(ms))
            }),
            Var::ExpiresAtMs => self
                .expires_at_ms
                .map_or(Resolved::Missing, |ms| Resolved::Number(ms.into())),
            Var::Now => Resolved::Text(crate::time::rfc3339(self.now_ms)),
            Var::Reason => self.reason.map_or(Resolved::Missing, text),
            Var::GrantStatus => self
                .grant_status
                .map_or(Resolved::Missing, |s| Resolved::Number(s.into())),
            Var::GrantResponse(path) => {
                let mut cur = &self.grant_response;
                for seg in path {
                    let next = match cur {
                        Value::Object(m) => m.get(seg),
                        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
                        _ => None,
                    };
                    match next {
                        Some(v) => cur = v,
                        None => return Resolved::Missing,
                    }
                }
                match cur {
                    Value::Null => Resolved::Missing,
                    Value::String(s) => Resolved::Text(s.clone()),
                    Value::Number(n) => Resolved::Number(n.clone()),
                    other => Resolved::Json(other.clone()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars() -> Vars {
        Vars {
            request_id: "req-1".into(),
            entitlement: "db/prod/admin".into(),
            duration_seconds: 3600,
            justification: "incident \"INC-7\"\r\nX-Evil: 1".into(),
            ticket: String::new(),
            requester_id: "alice".into(),
            requester_email: "alice@example.com".into(),
            requester_display_name: "Alice".into(),
            expires_at_ms: Some(1_795_341_600_000),
            now_ms: 1_795_338_000_000,
            reason: None,
            grant_status: None,
            grant_response: Value::Null,
        }
    }

    fn revoke_vars(status: Option<u16>, response: Value) -> Vars {
        Vars {
            expires_at_ms: None,
            reason: Some("expired"),
            grant_status: status,
            grant_response: response,
            ..vars()
        }
    }

    fn t(s: &str, phase: Phase) -> Template {
        Template::parse(s, phase).expect("template parses")
    }

    fn body(v: Value, phase: Phase) -> JsonTemplate {
        let mut errors = Vec::new();
        let b = JsonTemplate::parse(&v, phase, "grant.body", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        b
    }

    #[test]
    fn parses_literals_and_placeholders() {
        let tpl = t("a{{ request.id }}b{{now}}", Phase::Grant);
        assert_eq!(
            tpl.0,
            vec![
                Segment::Lit("a".into()),
                Segment::Var(Var::RequestId),
                Segment::Lit("b".into()),
                Segment::Var(Var::Now)
            ]
        );
        assert_eq!(
            t("no placeholders }} here", Phase::Grant).0,
            vec![Segment::Lit("no placeholders }} here".into())]
        );
        assert_eq!(
            t("{{grant.response.data.0.id}}", Phase::Revoke).single_var(),
            Some(&Var::GrantResponse(vec![
                "data".into(),
                "0".into(),
                "id".into()
            ]))
        );
    }

    #[test]
    fn rejects_unknown_and_misplaced_variables() {
        let errs = Template::parse("{{request.idd}} {{user}}", Phase::Grant).unwrap_err();
        assert_eq!(errs.len(), 2);
        assert!(
            errs[0].contains("unknown variable `{{request.idd}}`"),
            "{errs:?}"
        );
        assert!(errs[1].contains("`{{user}}`"), "{errs:?}");

        let e = Template::parse("{{grant.response.id}}", Phase::Grant).unwrap_err();
        assert!(e[0].contains("only available in revoke"), "{e:?}");
        let e = Template::parse("{{grant.status}}", Phase::Grant).unwrap_err();
        assert!(e[0].contains("only available in revoke"), "{e:?}");
        let e = Template::parse("{{reason}}", Phase::Grant).unwrap_err();
        assert!(e[0].contains("only available in revoke"), "{e:?}");
        let e = Template::parse("{{expires_at}}", Phase::Revoke).unwrap_err();
        assert!(e[0].contains("only available in grant"), "{e:?}");
        let e = Template::parse("{{grant.response..id}}", Phase::Revoke).unwrap_err();
        assert!(e[0].contains("empty path segment"), "{e:?}");
    }

    #[test]
    fn rejects_malformed_placeholders() {
        assert!(
            Template::parse("x{{request.id", Phase::Grant).unwrap_err()[0].contains("unterminated")
        );
        assert!(
            Template::parse("{{ }}", Phase::Grant).unwrap_err()[0].contains("empty placeholder")
        );
        assert!(
            Template::parse("{{{request.id}}}", Phase::Grant).unwrap_err()[0].contains("malformed")
        );
    }

    #[test]
    fn body_values_cannot_break_json() {
        let b = body(
            json!({"why": "{{request.justification}}", "user": "u-{{requester.id}}"}),
            Phase::Grant,
        );
        let rendered = b.render(&vars());
        assert_eq!(rendered["why"], json!("incident \"INC-7\"\r\nX-Evil: 1"));
        assert_eq!(rendered["user"], json!("u-alice"));
        // Serialised, the quotes and line breaks are escaped and the document has two keys.
        let text = serde_json::to_string(&rendered).expect("serialises");
        let back: Value = serde_json::from_str(&text).expect("round-trips");
        assert_eq!(back.as_object().map(Map::len), Some(2));
        assert!(
            text.contains(r#"incident \"INC-7\"\r\nX-Evil: 1"#),
            "{text}"
        );
    }

    #[test]
    fn whole_numeric_placeholders_become_numbers() {
        let b = body(
            json!({
                "seconds": "{{request.duration_seconds}}",
                "until_ms": "{{ expires_at_ms }}",
                "label": "{{request.duration_seconds}}s",
                "until": "{{expires_at}}",
                "nested": [{"at": "{{now}}"}, 7, true, null],
                "{{requester.id}}": "key substituted"
            }),
            Phase::Grant,
        );
        let r = b.render(&vars());
        assert_eq!(r["seconds"], json!(3600));
        assert_eq!(r["until_ms"], json!(1_795_341_600_000_i64));
        assert_eq!(r["label"], json!("3600s"));
        assert_eq!(r["until"], json!("2026-11-22T10:00:00Z"));
        assert_eq!(
            r["nested"],
            json!([{"at": "2026-11-22T09:00:00Z"}, 7, true, null])
        );
        assert_eq!(r["alice"], json!("key substituted"));
    }

    #[test]
    fn grant_values_in_revoke_bodies() {
        let b = body(
            json!({"id": "{{grant.response.id}}", "all": "{{grant.response}}", "s": "{{grant.status}}", "n": "{{grant.response.n}}", "m": "x{{grant.response.missing}}y", "why": "{{reason}}"}),
            Phase::Revoke,
        );
        let r = b.render(&revoke_vars(Some(201), json!({"id": "g-1", "n": 5})));
        assert_eq!(
            r,
            json!({"id": "g-1", "all": {"id": "g-1", "n": 5}, "s": 201, "n": 5, "m": "xy", "why": "expired"})
        );
        // Nothing stored (rollback of a grant that returned nothing): missing values.
        let r = b.render(&revoke_vars(None, Value::Null));
        assert_eq!(
            r,
            json!({"id": null, "all": null, "s": null, "n": null, "m": "xy", "why": "expired"})
        );
    }

    #[test]
    fn reports_body_errors_with_paths() {
        let mut errors = Vec::new();
        JsonTemplate::parse(
            &json!({"a": ["ok", "{{nope}}"], "b": {"c": "{{grant.status}}"}}),
            Phase::Grant,
            "grant.body",
            &mut errors,
        );
        let paths: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, vec!["grant.body.a[1]", "grant.body.b.c"]);
    }

    #[test]
    fn urls_percent_encode_substituted_values() {
        let v = Vars {
            requester_id: "a/b?c=d&e#f g%ü".into(),
            ..vars()
        };
        let url = t(
            "https://t.example/users/{{requester.id}}/roles?e={{requester.email}}",
            Phase::Grant,
        )
        .render_url(&v);
        assert_eq!(
            url.as_deref(),
            Ok(
                "https://t.example/users/a%2Fb%3Fc%3Dd%26e%23f%20g%25%C3%BC/roles?e=alice%40example.com"
            )
        );
        let url = t("https://t.example/x/{{request.id}}-._~", Phase::Grant).render_url(&Vars {
            request_id: "AZaz09-._~".into(),
            ..vars()
        });
        assert_eq!(url.as_deref(), Ok("https://t.example/x/AZaz09-._~-._~"));
    }

    #[test]
    fn urls_refuse_dot_segments_and_missing_grant_values() {
        let tpl = t(
            "https://t.example/grants/{{grant.response.id}}",
            Phase::Revoke,
        );
        assert_eq!(
            tpl.render_url(&revoke_vars(Some(200), json!({"id": 42})))
                .as_deref(),
            Ok("https://t.example/grants/42")
        );
        let e = tpl.render_url(&revoke_vars(None, Value::Null)).unwrap_err();
        assert!(
            e.contains("needs `{{grant.response.id}}`") && e.contains("nothing was sent"),
            "{e}"
        );
        let e = tpl
            .render_url(&revoke_vars(Some(200), json!({"id": ""})))
            .unwrap_err();
        assert!(e.contains("needs `{{grant.response.id}}`"), "{e}");
        let e = tpl
            .render_url(&revoke_vars(Some(200), json!({"id": ".."})))
            .unwrap_err();
        assert!(e.contains("would change the URL's path"), "{e}");
        // An empty non-grant value (no ticket) is fine.
        let ok = t(
            "https://t.example/g?ticket={{request.ticket}}",
            Phase::Grant,
        )
        .render_url(&vars());
        assert_eq!(ok.as_deref(), Ok("https://t.example/g?ticket="));
    }

    #[test]
    fn headers_refuse_line_breaks() {
        let tpl = t("Bearer {{request.justification}}", Phase::Grant);
        let e = tpl.render_header(&vars()).unwrap_err();
        assert!(
            e.contains("request.justification") && e.contains("line break"),
            "{e}"
        );
        let ok =
            t("for {{requester.id}} until {{expires_at}}", Phase::Grant).render_header(&vars());
        assert_eq!(ok.as_deref(), Ok("for alice until 2026-11-22T10:00:00Z"));
        let e = tpl
            .render_header(&Vars {
                justification: "a\nb".into(),
                ..vars()
            })
            .unwrap_err();
        assert!(e.contains("line break"));
    }

    #[test]
    fn names_round_trip() {
        for (name, _, _) in FIXED {
            let phase = if matches!(*name, "reason" | "grant.status") {
                Phase::Revoke
            } else if name.starts_with("expires_at") {
                Phase::Grant
            } else {
                Phase::Revoke
            };
            assert_eq!(
                Var::parse(name, phase).map(|v| v.name()).as_deref(),
                Ok(*name)
            );
        }
        assert_eq!(
            Var::parse("grant.response.a.b", Phase::Revoke)
                .map(|v| v.name())
                .as_deref(),
            Ok("grant.response.a.b")
        );
    }
}
