//! The OpenAPI 3.1 document served at `/api/v1/openapi.json`. A test checks that it lists
//! exactly the routes the router mounts.

use serde_json::{Value, json};

fn error_responses(codes: &[u16]) -> Value {
    let mut m = serde_json::Map::new();
    for c in codes {
        let desc = match c {
            400 => "Invalid input (malformed JSON, unknown fields, a rule of the entitlement)",
            401 => "Not signed in, or the token is expired or revoked",
            403 => "Not allowed (not requestable, self-review, not an eligible reviewer)",
            404 => "No such thing, or not visible to the caller",
            409 => "Not possible in the request's current state, or a concurrent change",
            410 => "The approval has expired",
            422 => "The parameters are not the approved ones",
            503 => "A dependency (an OIDC issuer's keys) did not answer",
            413 => "Body too large",
            415 => "Body is not JSON",
            502 => "The connector failed",
            _ => "Error",
        };
        m.insert(
            c.to_string(),
            json!({ "description": desc, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }),
        );
    }
    Value::Object(m)
}

fn ok(desc: &str, schema: Value) -> Value {
    json!({ "description": desc, "content": { "application/json": { "schema": schema } } })
}

fn with_errors(mut responses: Value, codes: &[u16]) -> Value {
    if let (Some(r), Value::Object(e)) = (responses.as_object_mut(), error_responses(codes)) {
        r.extend(e);
    }
    responses
}

fn id_param() -> Value {
    json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } })
}

fn request_ref() -> Value {
    json!({ "$ref": "#/components/schemas/Request" })
}

fn action(summary: &str, body: Option<Value>) -> Value {
    let mut op = json!({
        "summary": summary,
        "parameters": [id_param()],
        "responses": with_errors(json!({ "200": ok("The request after the action", request_ref()) }), &[400, 401, 403, 404, 409]),
    });
    if let Some(b) = body {
        op["requestBody"] =
            json!({ "required": true, "content": { "application/json": { "schema": b } } });
    }
    op
}

/// The document.
pub fn document() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Sallyport API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Just-in-time access requests, reviews, grants and the audit log. Authenticate with `Authorization: Bearer <token>`. Every error is `{code, message, request_id}`; send `X-Request-Id` to choose the id."
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["code", "message", "request_id"],
                    "properties": {
                        "code": { "type": "string", "examples": ["invalid_input", "not_eligible", "self_review"] },
                        "message": { "type": "string" },
                        "request_id": { "type": "string" }
                    }
                },
                "Principal": {
                    "type": "object",
                    "properties": { "id": { "type": "string" }, "email": { "type": "string" }, "name": { "type": "string" }, "groups": { "type": "array", "items": { "type": "string" } } }
                },
                "State": { "type": "string", "enum": ["pending", "approved", "provisioning", "active", "expired", "revoked", "ended", "denied", "cancelled", "timed_out", "failed"] },
                "Request": {
                    "type": "object",
                    "properties": {
                        "id": { "type": "string" },
                        "entitlement": { "type": "string" },
                        "requester": { "$ref": "#/components/schemas/Principal" },
                        "state": { "$ref": "#/components/schemas/State" },
                        "duration": { "type": "string", "examples": ["1h30m"] },
                        "duration_secs": { "type": "integer" },
                        "justification": { "type": "string" },
                        "ticket": { "type": ["string", "null"] },
                        "created_at": { "type": "string", "format": "date-time" },
                        "updated_at": { "type": "string", "format": "date-time" },
                        "pending_until": { "type": "string", "format": "date-time" },
                        "reason": { "type": ["string", "null"], "description": "why it was denied, failed, revoked, ended or expired" },
                        "approval_reason": { "type": ["string", "null"] },
                        "break_glass": { "type": "boolean" },
                        "decided_by": { "type": ["object", "null"] },
                        "requirements": { "type": "array", "items": { "type": "object" } },
                        "reviews": { "type": "array", "items": { "type": "object" } },
                        "can_review": { "type": "boolean" },
                        "grant": { "type": ["object", "null"] },
                        "revocation": { "type": ["object", "null"] },
                        "version": { "type": "integer" }
                    }
                },
                "Entitlement": { "type": "object" },
                "AuditEvent": { "type": "object" },
                "Token": { "type": "object" },
                "Duration": { "oneOf": [ { "type": "string", "examples": ["30m", "1h", "1h30m"] }, { "type": "integer", "minimum": 1, "description": "seconds" } ] }
            }
        },
        "security": [ { "bearer": [] } ],
        "paths": {
            "/healthz": { "get": { "summary": "Liveness", "security": [], "responses": { "200": ok("Alive", json!({ "type": "object" })) } } },
            "/readyz": { "get": { "summary": "Readiness: the database answers", "security": [], "responses": { "200": ok("Ready", json!({ "type": "object" })), "503": ok("Not ready", json!({ "$ref": "#/components/schemas/Error" })) } } },
            "/metrics": { "get": { "summary": "Prometheus metrics", "security": [], "responses": { "200": { "description": "Text exposition format", "content": { "text/plain": {} } } } } },
            "/api/v1/openapi.json": { "get": { "summary": "This document", "security": [], "responses": { "200": ok("OpenAPI", json!({ "type": "object" })) } } },
            "/api/v1/me": { "get": { "summary": "The signed-in principal and roles", "responses": with_errors(json!({ "200": ok("Me", json!({ "type": "object" })) }), &[401]) } },
            "/api/v1/entitlements": { "get": { "summary": "Entitlements, with whether the caller may request each", "responses": with_errors(json!({ "200": ok("Entitlements", json!({ "type": "object", "properties": { "entitlements": { "type": "array", "items": { "$ref": "#/components/schemas/Entitlement" } } } })) }), &[401]) } },
            "/api/v1/requests": {
                "get": {
                    "summary": "List requests, newest first",
                    "parameters": [
                        { "name": "scope", "in": "query", "schema": { "type": "string", "enum": ["mine", "review", "all"], "default": "mine" } },
                        { "name": "state", "in": "query", "description": "comma-separated states", "schema": { "type": "string" } },
                        { "name": "entitlement", "in": "query", "schema": { "type": "string" } },
                        { "name": "requester", "in": "query", "description": "scope=all, admins and auditors", "schema": { "type": "string" } },
                        { "name": "before", "in": "query", "description": "page: ids before this one", "schema": { "type": "string" } },
                        { "name": "limit", "in": "query", "schema": { "type": "integer", "default": 50, "maximum": 500 } }
                    ],
                    "responses": with_errors(json!({ "200": ok("Requests", json!({ "type": "object", "properties": { "requests": { "type": "array", "items": request_ref() }, "next_before": { "type": ["string", "null"] } } })) }), &[400, 401])
                },
                "post": {
                    "summary": "Request an entitlement; the approval policy answers at once",
                    "requestBody": { "required": true, "content": { "application/json": { "schema": {
                        "type": "object", "additionalProperties": false, "required": ["entitlement", "justification"],
                        "properties": {
                            "entitlement": { "type": "string" },
                            "duration": { "$ref": "#/components/schemas/Duration" },
                            "justification": { "type": "string", "maxLength": 2000 },
                            "ticket": { "type": "string", "maxLength": 200 }
                        }
                    } } } },
                    "responses": with_errors(json!({ "201": ok("Created (state pending, approved or denied)", request_ref()) }), &[400, 401, 403, 404, 413, 415])
                }
            },
            "/api/v1/requests/{id}": { "get": { "summary": "One request with its reviews, grant and revocation", "parameters": [id_param()], "responses": with_errors(json!({ "200": ok("The request", request_ref()) }), &[401, 404]) } },
            "/api/v1/requests/{id}/cancel": { "post": action("Withdraw a pending request (requester or admin)", None) },
            "/api/v1/requests/{id}/reviews": { "post": action("Approve or deny (eligible reviewers)", Some(json!({
                "type": "object", "additionalProperties": false, "required": ["verdict"],
                "properties": { "verdict": { "type": "string", "enum": ["approve", "deny"] }, "comment": { "type": "string", "description": "required to deny" } }
            }))) },
            "/api/v1/requests/{id}/revoke": { "post": action("Revoke approved or active access (admins and approvers)", Some(json!({
                "type": "object", "additionalProperties": false, "required": ["reason"], "properties": { "reason": { "type": "string" } }
            }))) },
            "/api/v1/requests/{id}/end": { "post": action("End one's own active grant early", None) },
            "/api/v1/grants": { "get": {
                "summary": "Requests holding a grant",
                "parameters": [
                    { "name": "scope", "in": "query", "schema": { "type": "string", "enum": ["mine", "all"], "default": "mine" } },
                    { "name": "active", "in": "query", "schema": { "type": "boolean", "default": true } },
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "default": 100 } }
                ],
                "responses": with_errors(json!({ "200": ok("Grants", json!({ "type": "object", "properties": { "grants": { "type": "array", "items": request_ref() } } })) }), &[400, 401])
            } },
            "/api/v1/credentials": { "post": {
                "summary": "Mint credentials for the caller's active grant (AWS STS keys for aws-sts); returned once, never stored",
                "requestBody": { "required": true, "content": { "application/json": { "schema": {
                    "type": "object", "additionalProperties": false,
                    "properties": { "entitlement": { "type": "string" }, "request_id": { "type": "string" } },
                    "description": "exactly one of entitlement (your latest active grant of it) or request_id"
                } } } },
                "responses": with_errors(json!({ "200": ok("Credentials, expiring no later than the grant", json!({
                    "type": "object",
                    "properties": {
                        "type": { "type": "string", "enum": ["aws", "generic"] },
                        "access_key_id": { "type": "string" }, "secret_access_key": { "type": "string" }, "session_token": { "type": "string" },
                        "expiration": { "type": "string", "format": "date-time" },
                        "request_id": { "type": "string" }, "entitlement": { "type": "string" },
                        "grant_expires_at": { "type": "string", "format": "date-time" }
                    }
                })) }), &[400, 401, 403, 404, 409, 502])
            } },
            "/api/v1/audit": { "get": {
                "summary": "The audit log in chain order (auditors and admins)",
                "parameters": [
                    { "name": "since", "in": "query", "description": "RFC 3339 or ms", "schema": { "type": "string" } },
                    { "name": "until", "in": "query", "schema": { "type": "string" } },
                    { "name": "subject", "in": "query", "schema": { "type": "string" } },
                    { "name": "actor", "in": "query", "description": "e.g. user:alice", "schema": { "type": "string" } },
                    { "name": "action", "in": "query", "description": "exact, or a prefix ending in `.`", "schema": { "type": "string" } },
                    { "name": "after_seq", "in": "query", "schema": { "type": "integer" } },
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "default": 1000, "maximum": 10000 } },
                    { "name": "format", "in": "query", "schema": { "type": "string", "enum": ["json", "jsonl"] } }
                ],
                "responses": with_errors(json!({ "200": ok("Events", json!({ "type": "object", "properties": { "events": { "type": "array", "items": { "$ref": "#/components/schemas/AuditEvent" } }, "next_after_seq": { "type": ["integer", "null"] } } })) }), &[400, 401, 403])
            } },
            "/api/v1/tokens": { "get": { "summary": "The caller's newest 1,000 tokens, newest first (never their secrets); tokens are deleted 30 days after they expired or were revoked", "responses": with_errors(json!({ "200": ok("Tokens", json!({ "type": "object", "properties": { "tokens": { "type": "array", "items": { "$ref": "#/components/schemas/Token" } } } })) }), &[401]) } },
            "/api/v1/tokens/{id}": { "delete": { "summary": "Revoke a token (one's own; admins: any)", "parameters": [id_param()], "responses": with_errors(json!({ "204": { "description": "Revoked" } }), &[401, 404]) } },
            "/api/v1/cli/token": { "post": { "summary": "The CLI's browser login: a one-time code (from the browser) and the PKCE verifier for an API token", "security": [],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["code", "code_verifier"], "properties": { "code": { "type": "string" }, "code_verifier": { "type": "string", "minLength": 43, "maxLength": 128 }, "name": { "type": "string" } } } } } },
                "responses": with_errors(json!({ "201": ok("A token", json!({ "type": "object" })) }), &[400, 401, 429]) } },
            "/api/v1/actions/kinds": { "get": { "summary": "The action kinds: parameters, validity, who may ask", "responses": with_errors(json!({ "200": ok("Kinds", json!({ "type": "object" })) }), &[401]) } },
            "/api/v1/actions": { "post": {
                "summary": "Ask approval for one action. Authenticate with an API token or a pipeline's OIDC workload token (verified against its issuer's JWKS); a pipeline also receives a `wait_token` that reads this request",
                "requestBody": { "required": true, "content": { "application/json": { "schema": {
                    "type": "object", "required": ["kind", "reason"], "additionalProperties": false,
                    "properties": { "kind": { "type": "string", "examples": ["deploy/production"] }, "parameters": { "type": "object", "additionalProperties": { "type": ["string", "integer", "boolean"] } }, "reason": { "type": "string" } }
                } } } },
                "responses": with_errors(json!({ "201": ok("The action request (state `active` once approved, with `attestation`)", request_ref()) }), &[400, 401, 403, 404, 503])
            } },
            "/api/v1/actions/{id}": { "get": {
                "summary": "An action request; its requester gets the signed `attestation` while the approval is usable. Accepts an API token or the request's wait token",
                "parameters": [id_param()],
                "responses": with_errors(json!({ "200": ok("The action request", request_ref()) }), &[401, 404])
            } },
            "/api/v1/actions/{id}/consume": { "post": {
                "summary": "Use an approval once: the attestation is the credential; `parameters` (required) must be the approved ones. The second consume fails",
                "security": [],
                "parameters": [id_param()],
                "requestBody": { "required": true, "content": { "application/json": { "schema": {
                    "type": "object", "required": ["attestation", "parameters"], "additionalProperties": false,
                    "properties": { "attestation": { "type": "string" }, "parameters": { "type": "object" } }
                } } } },
                "responses": with_errors(json!({ "200": ok("Consumed", json!({ "type": "object" })) }), &[400, 401, 404, 409, 410, 422])
            } },
            "/.well-known/jwks.json": { "get": { "summary": "Public keys (JWKS) that verify attestations, including retired keys until their tokens expire", "security": [], "responses": { "200": ok("JWK set", json!({ "type": "object" })) } } },
            "/api/v1/dev/users": { "get": { "summary": "Dev mode only: the demo users", "security": [], "responses": { "200": ok("Users", json!({ "type": "object" })) } } },
            "/api/v1/dev/login": { "post": { "summary": "Dev mode only: a token for a demo user, without a password", "security": [],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["user"], "properties": { "user": { "type": "string" }, "token_name": { "type": "string" } } } } } },
                "responses": with_errors(json!({ "201": ok("A token", json!({ "type": "object" })) }), &[400, 404]) } },
            "/demo/target/grants": { "get": { "summary": "Dev mode only: the demo target's grants", "responses": { "200": ok("Grants", json!({ "type": "object" })) } } },
            "/demo/target/grants/{id}": {
                "put": { "summary": "Dev mode only: the demo target grants access", "parameters": [id_param()], "responses": { "200": ok("Granted", json!({ "type": "object" })), "201": ok("Granted", json!({ "type": "object" })) } },
                "delete": { "summary": "Dev mode only: the demo target removes access", "parameters": [id_param()], "responses": { "200": ok("Removed", json!({ "type": "object" })), "404": ok("Already gone", json!({ "type": "object" })) } }
            }
        }
    })
}

/// `(method, path)` pairs listed in the document.
pub fn listed_routes() -> Vec<(String, String)> {
    let doc = document();
    let mut out = Vec::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, ops) in paths {
            if let Some(ops) = ops.as_object() {
                for method in ops.keys() {
                    out.push((method.clone(), path.clone()));
                }
            }
        }
    }
    out.sort();
    out
}

/// Every route the router can mount (API and dev mode).
pub fn mounted_routes() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = super::api::ROUTES
        .iter()
        .chain(super::dev::DEV_ROUTES)
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn document_lists_exactly_the_mounted_routes() {
        assert_eq!(super::listed_routes(), super::mounted_routes());
    }
}
