//! Azure identifiers (GUIDs, scopes, role definition ids) and PIM statuses. Shared by the `azure-rbac` plugin (to
//! validate settings) and the host's `azure` capability (to validate every call), through
//! `#[path]`, so both sides agree on what a scope is.

/// Is `s` a GUID (8-4-4-4-12 hex)?
pub fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Is `s` a scope Sallyport accepts: `/subscriptions/<guid>` optionally followed by
/// `/resourceGroups/<name>` and further resource segments, or `/providers/Microsoft.Management/
/// managementGroups/<name>`; no empty segments, no query, no `..`.
pub fn is_scope(s: &str) -> bool {
    let segs: Vec<&str> = s.split('/').collect();
    if segs.len() < 3 || !segs[0].is_empty() {
        return false;
    }
    let segs = &segs[1..];
    let clean = segs.iter().all(|p| {
        !p.is_empty()
            && *p != "."
            && *p != ".."
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.()".contains(c))
    });
    if !clean || segs.len() > 16 {
        return false;
    }
    if segs[0].eq_ignore_ascii_case("subscriptions") {
        is_guid(segs[1])
            && (segs.len() == 2
                || (segs[2].eq_ignore_ascii_case("resourceGroups") && segs.len() >= 4))
    } else {
        segs.len() == 4
            && segs[0].eq_ignore_ascii_case("providers")
            && segs[1].eq_ignore_ascii_case("Microsoft.Management")
            && segs[2].eq_ignore_ascii_case("managementGroups")
    }
}

/// Is `s` a full role definition id (`[<scope>]/providers/Microsoft.Authorization/roleDefinitions/<guid>`)?
pub fn is_role_definition_id(s: &str) -> bool {
    let Some((scope, guid)) = split_id(s, "roleDefinitions") else {
        return false;
    };
    is_guid(guid) && (scope.is_empty() || is_scope(scope))
}

/// Split `<scope>/providers/Microsoft.Authorization/<kind>/<name>` (case-insensitively).
pub fn split_id<'a>(id: &'a str, kind: &str) -> Option<(&'a str, &'a str)> {
    let marker = format!(
        "/providers/microsoft.authorization/{}/",
        kind.to_ascii_lowercase()
    );
    let lower = id.to_ascii_lowercase();
    let at = lower.rfind(&marker)?;
    let name = &id[at + marker.len()..];
    (!name.is_empty() && !name.contains('/')).then_some((&id[..at], name))
}

/// PIM statuses under which the role is (or is about to be) active.
pub fn pim_active(status: &str) -> bool {
    matches!(
        status,
        "Provisioned"
            | "Granted"
            | "Accepted"
            | "PendingProvisioning"
            | "ProvisioningStarted"
            | "PendingScheduleCreation"
            | "ScheduleCreated"
            | "AdminApproved"
            | "PendingExternalProvisioning"
    )
}
