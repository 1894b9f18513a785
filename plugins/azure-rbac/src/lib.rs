//! The built-in `azure-rbac` connector: temporary Azure role assignments.
//!
//! Settings:
//!
//! ```json
//! { "scope": "/subscriptions/<id>/resourceGroups/<name>",
//!   "role": "Reader",
//!   "mode": "pim",
//!   "principal": "object_id" }
//! ```
//!
//! - `scope`: where the role applies (a subscription, resource group, resource or management
//!   group). It must also be granted to the plugin in `[plugins.capabilities.azure-rbac.azure]`.
//! - `role`: a role name (`Reader`), a role definition GUID, or a full role definition id.
//! - `mode`: `pim` (default) creates a PIM `AdminAssign` schedule request whose expiration is
//!   `AfterDuration`, so Azure itself ends the access on time even if Sallyport is down; an early
//!   revoke sends `AdminRemove`. `assignment` creates a plain role assignment for tenants without
//!   PIM (Entra ID P2): it has no native expiry, and only Sallyport's revoke ends it.
//! - `principal` (required): how the requester is found in Entra ID. `object_id`: the requester's
//!   Sallyport id *is* their object id (sign in with `[oidc] id_claim = "oid"`); `email`: the
//!   requester's e-mail is their user principal name, looked up in Microsoft Graph; or a template
//!   such as `{{requester.id}}@contoso.com` giving the user principal name.
//! - `principal_type` (assignment mode): `User` (default), `Group` or `ServicePrincipal`.
//!
//! If the principal already holds the role at that scope through an assignment Sallyport did not
//! make, the grant succeeds without changing anything, and the revoke leaves that assignment
//! alone: Sallyport only ever removes what it created for the request.

use serde_json::{Value, json};

#[cfg(target_arch = "wasm32")]
mod guest;

#[path = "../../http/src/time.rs"]
mod time;

pub mod ids;

use ids::{is_guid, is_role_definition_id, is_scope, pim_active};

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

/// PIM schedule, or plain role assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pim,
    Assignment,
}

/// How the requester becomes an Entra principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalMapping {
    /// The requester id is the object id.
    ObjectId,
    /// The requester's e-mail is the UPN.
    Email,
    /// A UPN template with `{{requester.id}}`.
    Upn(String),
}

/// Parsed settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub scope: String,
    pub role: String,
    pub mode: Mode,
    pub principal: PrincipalMapping,
    pub principal_type: Option<String>,
}

const KNOWN: &[&str] = &["scope", "role", "mode", "principal", "principal_type"];

/// Check and parse.
pub fn parse(settings: &str) -> Result<Settings, Vec<SettingError>> {
    let v: Value =
        serde_json::from_str(settings).map_err(|e| vec![err("", format!("not JSON: {e}"))])?;
    let Value::Object(o) = v else {
        return Err(vec![err("", "settings must be an object")]);
    };
    let mut errors = Vec::new();
    for k in o.keys() {
        if !KNOWN.contains(&k.as_str()) {
            errors.push(err(
                k,
                format!("unknown setting; known: {}", KNOWN.join(", ")),
            ));
        }
    }
    let text = |errors: &mut Vec<SettingError>, key: &str| match o.get(key) {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errors.push(err(key, "must be a string"));
            None
        }
    };
    let scope = match text(&mut errors, "scope") {
        Some(s) if is_scope(&s) => s,
        Some(s) => {
            errors.push(err(
                "scope",
                format!("`{s}` is not a scope, e.g. /subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/my-rg (no trailing slash)"),
            ));
            String::new()
        }
        None => {
            if !o.contains_key("scope") {
                errors.push(err("scope", "required: where the role applies, e.g. /subscriptions/<id>/resourceGroups/<name>"));
            }
            String::new()
        }
    };
    let role = match text(&mut errors, "role") {
        Some(r)
            if is_guid(&r)
                || is_role_definition_id(&r)
                || (!r.trim().is_empty()
                    && r.len() <= 256
                    && !r.contains('/')
                    && !r.chars().any(char::is_control)) =>
        {
            r
        }
        Some(r) => {
            errors.push(err(
                "role",
                format!("`{r}` is not a role name, GUID or role definition id"),
            ));
            String::new()
        }
        None => {
            if !o.contains_key("role") {
                errors.push(err(
                    "role",
                    "required: a role name such as Reader, or its id",
                ));
            }
            String::new()
        }
    };
    let mode = match text(&mut errors, "mode").as_deref() {
        None | Some("pim") => Mode::Pim,
        Some("assignment") => Mode::Assignment,
        Some(m) => {
            errors.push(err(
                "mode",
                format!("`{m}` is not a mode; use pim (Azure ends the access itself) or assignment (plain role assignment, for tenants without PIM)"),
            ));
            Mode::Pim
        }
    };
    let principal = match text(&mut errors, "principal").as_deref() {
        None => {
            if !o.contains_key("principal") {
                errors.push(err(
                    "principal",
                    "required: how the requester is found in Entra ID: object_id (sign in with [oidc] id_claim = \"oid\"), email, or a template such as {{requester.id}}@contoso.com",
                ));
            }
            PrincipalMapping::ObjectId
        }
        Some("object_id") => PrincipalMapping::ObjectId,
        Some("email") => PrincipalMapping::Email,
        Some(t) if t.contains("{{requester.id}}") => {
            let probe = t.replace("{{requester.id}}", "x");
            if probe.contains("{{") || !probe.contains('@') || probe.contains(char::is_whitespace) {
                errors.push(err(
                    "principal",
                    "a user principal name template looks like {{requester.id}}@contoso.com (the only placeholder is {{requester.id}})",
                ));
            }
            PrincipalMapping::Upn(t.to_owned())
        }
        Some(p) => {
            errors.push(err(
                "principal",
                format!("`{p}` is not a mapping; use object_id, email, or a template such as {{{{requester.id}}}}@contoso.com"),
            ));
            PrincipalMapping::ObjectId
        }
    };
    let principal_type = text(&mut errors, "principal_type");
    if let Some(t) = &principal_type {
        if !["User", "Group", "ServicePrincipal"].contains(&t.as_str()) {
            errors.push(err(
                "principal_type",
                format!("`{t}` is not User, Group or ServicePrincipal"),
            ));
        } else if mode == Mode::Pim {
            errors.push(err("principal_type", "only used with mode = assignment"));
        }
    }
    if errors.is_empty() {
        Ok(Settings {
            scope,
            role,
            mode,
            principal,
            principal_type,
        })
    } else {
        Err(errors)
    }
}

/// The host's Azure errors, reduced to what the connector decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AzureError {
    /// The principal, role or assignment does not exist, or the input is unusable.
    Rejected(String),
    /// The scope is outside the plugin's grant.
    NotAllowed(String),
    /// Sallyport has no `[azure]` configured.
    Unavailable(String),
    /// Azure refused Sallyport's identity (missing permissions).
    Refused(String),
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

fn azure_error(e: AzureError) -> ConnectorError {
    match e {
        AzureError::Transient(m) => ConnectorError::Transient(m),
        AzureError::Rejected(m)
        | AzureError::NotAllowed(m)
        | AzureError::Unavailable(m)
        | AzureError::Refused(m) => ConnectorError::Denied(m),
    }
}

/// `validate`: the settings, then (when Azure answers) that the role exists at the scope and the
/// scope is granted. When Azure cannot be asked right now (throttled, down, or Sallyport lacks the
/// read permission), the role is not checked: a configuration must not fail because of an outage.
pub fn validate(host: &mut impl Host, text: &str) -> Result<Option<String>, Vec<SettingError>> {
    let s = parse(text)?;
    match host.resolve_role(&s.scope, &s.role) {
        Ok(_) => Ok(None),
        Err(AzureError::Rejected(m)) => Err(vec![err("role", m)]),
        Err(AzureError::NotAllowed(m)) => Err(vec![err(
            "scope",
            format!("{m}: grant it in [plugins.capabilities.azure-rbac.azure] scopes"),
        )]),
        Err(AzureError::Unavailable(m)) => Err(vec![err("", m)]),
        Err(AzureError::Refused(m) | AzureError::Transient(m)) => Ok(Some(format!(
            "role `{}` at {} not checked: {m}",
            s.role, s.scope
        ))),
    }
}

/// A principal lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    ObjectId(String),
    Upn(String),
}

/// What `pim_assign` and `create_assignment` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    pub id: String,
    pub status: String,
    pub preexisting: bool,
}

/// Host calls.
pub trait Host {
    fn resolve_principal(&mut self, who: &Lookup) -> Result<String, AzureError>;
    fn resolve_role(&mut self, scope: &str, role: &str) -> Result<String, AzureError>;
    #[allow(clippy::too_many_arguments)]
    fn pim_assign(
        &mut self,
        scope: &str,
        principal: &str,
        role: &str,
        start: i64,
        duration_secs: u64,
        justification: &str,
        ticket: Option<&str>,
    ) -> Result<Assigned, AzureError>;
    fn pim_remove(
        &mut self,
        scope: &str,
        principal: &str,
        role: &str,
        justification: &str,
    ) -> Result<String, AzureError>;
    fn create_assignment(
        &mut self,
        scope: &str,
        principal: &str,
        principal_type: Option<&str>,
        role: &str,
        description: &str,
    ) -> Result<Assigned, AzureError>;
    fn delete_assignment(
        &mut self,
        scope: &str,
        principal: &str,
        role: &str,
    ) -> Result<bool, AzureError>;
}

/// The requester, as the plugin sees them.
#[derive(Debug, Clone, Default)]
pub struct Requester {
    pub id: String,
    pub email: Option<String>,
}

/// The request being served.
#[derive(Debug, Clone, Default)]
pub struct Call {
    pub request_id: String,
    pub entitlement: String,
    pub requester: Requester,
    pub justification: String,
    pub ticket: Option<String>,
    pub now: i64,
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

/// How to find the requester.
pub fn lookup(mapping: &PrincipalMapping, r: &Requester) -> Result<Lookup, ConnectorError> {
    match mapping {
        PrincipalMapping::ObjectId => {
            if is_guid(&r.id) {
                Ok(Lookup::ObjectId(r.id.clone()))
            } else {
                Err(ConnectorError::Denied(format!(
                    "requester `{}` is not an Entra object id: sign in with [oidc] id_claim = \"oid\", or map principals by email or a user principal name template",
                    r.id
                )))
            }
        }
        PrincipalMapping::Email => match &r.email {
            Some(e) if !e.is_empty() => Ok(Lookup::Upn(e.clone())),
            _ => Err(ConnectorError::Denied(format!(
                "requester `{}` has no e-mail address to look up in Entra ID",
                r.id
            ))),
        },
        PrincipalMapping::Upn(t) => {
            if r.id.is_empty()
                || !r
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-'".contains(c))
            {
                return Err(ConnectorError::Denied(format!(
                    "requester `{}` cannot be part of a user principal name",
                    r.id
                )));
            }
            Ok(Lookup::Upn(t.replace("{{requester.id}}", &r.id)))
        }
    }
}

/// The whole `grant`.
pub fn grant(
    host: &mut impl Host,
    settings_text: &str,
    call: &Call,
    expires_at: i64,
) -> Result<(String, String), ConnectorError> {
    let s = settings(settings_text)?;
    let left_secs = (expires_at - call.now) / 1000;
    if left_secs <= 0 {
        return Err(ConnectorError::Denied(format!(
            "the grant already ended at {}",
            time::rfc3339(expires_at)
        )));
    }
    let who = lookup(&s.principal, &call.requester)?;
    let principal = host.resolve_principal(&who).map_err(azure_error)?;
    let role = host.resolve_role(&s.scope, &s.role).map_err(azure_error)?;
    let why = format!(
        "Sallyport {} for {}: {}",
        call.request_id, call.requester.id, call.justification
    );
    let mut handle = json!({
        "mode": match s.mode { Mode::Pim => "pim", Mode::Assignment => "assignment" },
        "scope": s.scope,
        "principal_id": principal,
        "role_definition_id": role,
    });
    let done = match s.mode {
        Mode::Pim => {
            let a = host
                .pim_assign(
                    &s.scope,
                    &principal,
                    &role,
                    call.now,
                    u64::try_from(left_secs).unwrap_or(0),
                    &why,
                    call.ticket.as_deref(),
                )
                .map_err(azure_error)?;
            if !a.preexisting && !pim_active(&a.status) {
                return Err(ConnectorError::Denied(format!(
                    "Azure PIM answered `{}` for the assignment request {}: the role is not active{}",
                    a.status,
                    a.id,
                    if a.status.starts_with("Pending") {
                        " (a PIM policy on this role requires its own approval for assignments; Sallyport revokes this request)"
                    } else {
                        ""
                    }
                )));
            }
            a
        }
        Mode::Assignment => host
            .create_assignment(
                &s.scope,
                &principal,
                s.principal_type.as_deref(),
                &role,
                &why,
            )
            .map_err(azure_error)?,
    };
    handle["id"] = json!(done.id);
    handle["status"] = json!(done.status);
    handle["preexisting"] = json!(done.preexisting);
    let role_name = &s.role;
    let summary = if done.preexisting {
        format!(
            "{role_name} at {} was already held by {principal} through an assignment Sallyport did not make; nothing changed, and revoking leaves it",
            s.scope
        )
    } else {
        match s.mode {
            Mode::Pim => format!(
                "PIM assigned {role_name} at {} to {principal} until {} ({}); Azure ends it itself",
                s.scope,
                time::rfc3339(call.now + left_secs * 1000),
                done.status
            ),
            Mode::Assignment => format!(
                "assigned {role_name} at {} to {principal}; a plain role assignment has no expiry of its own: Sallyport removes it at {}",
                s.scope,
                time::rfc3339(expires_at)
            ),
        }
    };
    Ok((handle.to_string(), summary))
}

/// What a revoke works on: the handle's ids when `grant` returned, else the settings resolved
/// again (a rollback of a grant that failed part-way). Even a grant that found the role
/// `preexisting` is revoked: the host removes only what this request created, so an answer lost
/// on the way back cannot leave Sallyport's own assignment behind.
fn target(
    host: &mut impl Host,
    s: &Settings,
    handle: &Value,
    call: &Call,
) -> Result<Option<(String, String)>, ConnectorError> {
    if let (Some(p), Some(r)) = (
        handle.get("principal_id").and_then(Value::as_str),
        handle.get("role_definition_id").and_then(Value::as_str),
    ) {
        return Ok(Some((p.to_owned(), r.to_owned())));
    }
    let who = match lookup(&s.principal, &call.requester) {
        Ok(w) => w,
        // The grant could not have reached Azure.
        Err(_) => return Ok(None),
    };
    let principal = match host.resolve_principal(&who) {
        Ok(p) => p,
        Err(AzureError::Rejected(_) | AzureError::NotAllowed(_)) => return Ok(None),
        Err(e) => return Err(azure_error(e)),
    };
    let role = match host.resolve_role(&s.scope, &s.role) {
        Ok(r) => r,
        Err(AzureError::Rejected(_) | AzureError::NotAllowed(_)) => return Ok(None),
        Err(e) => return Err(azure_error(e)),
    };
    Ok(Some((principal, role)))
}

/// `revoke`: idempotent; removes only what this request created.
pub fn revoke(
    host: &mut impl Host,
    settings_text: &str,
    handle_text: &str,
    call: &Call,
) -> Result<String, ConnectorError> {
    let s = settings(settings_text)?;
    let handle: Value = serde_json::from_str(handle_text).unwrap_or(Value::Null);
    let scope = handle
        .get("scope")
        .and_then(Value::as_str)
        .unwrap_or(&s.scope)
        .to_owned();
    let mode = match handle.get("mode").and_then(Value::as_str) {
        Some("assignment") => Mode::Assignment,
        Some("pim") => Mode::Pim,
        _ => s.mode,
    };
    let Some((principal, role)) = target(host, &s, &handle, call)? else {
        return Ok("nothing to remove".into());
    };
    match mode {
        Mode::Pim => host
            .pim_remove(
                &scope,
                &principal,
                &role,
                &format!("Sallyport {}: access ended", call.request_id),
            )
            .map_err(azure_error),
        Mode::Assignment => host
            .delete_assignment(&scope, &principal, &role)
            .map(|d| if d { "deleted" } else { "nothing to remove" }.to_owned())
            .map_err(azure_error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCOPE: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg";

    #[test]
    fn validates() {
        let ok = format!(r#"{{"scope": "{SCOPE}", "role": "Reader", "principal": "object_id"}}"#);
        let s = parse(&ok).expect("ok");
        assert_eq!(s.mode, Mode::Pim);
        assert_eq!(s.principal, PrincipalMapping::ObjectId);
        let e = parse(r#"{"scope": "/subscriptions/x/", "role": "", "mode": "forever", "principal": "upn", "extra": 1}"#)
            .expect_err("bad");
        let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, vec!["extra", "scope", "role", "mode", "principal"]);
        assert!(e[3].message.contains("pim"));
        let e = parse(r#"{"mode": "assignment"}"#).expect_err("missing");
        assert_eq!(
            e.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
            vec!["scope", "role", "principal"]
        );
        let t = format!(
            r#"{{"scope": "{SCOPE}", "role": "Reader", "mode": "assignment", "principal": "{{{{requester.id}}}}@contoso.com", "principal_type": "Group"}}"#
        );
        let s = parse(&t).expect("template");
        assert_eq!(
            s.principal,
            PrincipalMapping::Upn("{{requester.id}}@contoso.com".into())
        );
        let pt = format!(
            r#"{{"scope": "{SCOPE}", "role": "Reader", "principal": "email", "principal_type": "User"}}"#
        );
        assert_eq!(parse(&pt).expect_err("pim")[0].path, "principal_type");
    }

    #[test]
    fn principals() {
        let r = Requester {
            id: "alice".into(),
            email: Some("alice@contoso.com".into()),
        };
        assert!(lookup(&PrincipalMapping::ObjectId, &r).is_err());
        assert_eq!(
            lookup(&PrincipalMapping::Email, &r),
            Ok(Lookup::Upn("alice@contoso.com".into()))
        );
        assert_eq!(
            lookup(&PrincipalMapping::Upn("{{requester.id}}@x.com".into()), &r),
            Ok(Lookup::Upn("alice@x.com".into()))
        );
        let evil = Requester {
            id: "a@evil.com/../b".into(),
            email: None,
        };
        assert!(
            lookup(
                &PrincipalMapping::Upn("{{requester.id}}@x.com".into()),
                &evil
            )
            .is_err()
        );
        assert!(lookup(&PrincipalMapping::Email, &evil).is_err());
    }
}
