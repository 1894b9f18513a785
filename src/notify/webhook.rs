//! Webhooks: Sallyport's own JSON (signed), Slack incoming webhooks, Microsoft Teams.
//!
//! A `json` webhook's body is signed with HMAC-SHA256 under the webhook's key:
//! `X-Sallyport-Signature: t=<unix seconds>,v1=<hex HMAC of "<t>.<body>">`. A receiver
//! recomputes it over the raw body, compares in constant time, and refuses old timestamps.

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::config::{WebhookConfig, WebhookFormat};
use crate::domain::{Millis, Request};
use crate::secret::SecretStore;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "X-Sallyport-Signature";

/// One notification for a webhook.
#[derive(Debug)]
pub struct Event<'a> {
    /// The delivery's id (stable across retries: receivers can deduplicate on it).
    pub delivery: i64,
    /// `approved`, `review_needed`...
    pub topic: &'a str,
    /// The request.
    pub request: &'a Request,
    /// The request's page.
    pub url: String,
    /// When it is sent.
    pub at: Millis,
}

/// `t=...,v1=...` for `body` at unix time `t`.
pub fn sign(key: &[u8], t: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Sallyport's JSON body.
pub fn json_body(e: &Event<'_>) -> Value {
    let r = e.request;
    json!({
        "delivery": e.delivery,
        "topic": e.topic,
        "at": e.at,
        "url": e.url,
        "request": {
            "id": r.id,
            "entitlement": r.entitlement,
            "requester": { "id": r.requester.id, "name": r.requester.name, "email": r.requester.email },
            "state": r.state,
            "duration_secs": r.duration_secs,
            "justification": r.justification,
            "ticket": r.ticket,
            "reason": r.reason,
            "created_at": r.created_at,
            "activated_at": r.grant.as_ref().map(|g| g.activated_at),
            "expires_at": r.grant.as_ref().map(|g| g.expires_at),
            "break_glass": r.break_glass,
        }
    })
}

/// One line for chat.
fn summary(e: &Event<'_>) -> String {
    let r = e.request;
    let who = r.requester.name.as_deref().unwrap_or(&r.requester.id);
    let what = match e.topic {
        "review_needed" => "needs review",
        "approved" => "was approved",
        "denied" => "was denied",
        "active" => "is active",
        "expiring" => "ends soon",
        "expired" => "has ended",
        "revoked" => "was revoked",
        "ended" => "was ended early",
        "cancelled" => "was withdrawn",
        "timed_out" => "timed out",
        "failed" => "could not be granted",
        "break_glass" => "was approved by BREAK-GLASS",
        other => other,
    };
    format!("{} for {who} {what}", r.entitlement)
}

/// Slack's mrkdwn needs `&`, `<` and `>` escaped.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A Slack incoming-webhook message.
pub fn slack_body(e: &Event<'_>) -> Value {
    let text = slack_escape(&summary(e));
    json!({
        "text": text,
        "blocks": [
            { "type": "section", "text": { "type": "mrkdwn", "text": format!(
                "*{}*\n>{}\n<{}|Open in Sallyport>",
                text,
                slack_escape(&e.request.justification).replace('\n', "\n>"),
                e.url
            ) } }
        ]
    })
}

/// A Microsoft Teams message carrying an Adaptive Card.
pub fn teams_body(e: &Event<'_>) -> Value {
    let r = e.request;
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    { "type": "TextBlock", "text": summary(e), "weight": "Bolder", "wrap": true },
                    { "type": "FactSet", "facts": [
                        { "title": "Requester", "value": r.requester.id },
                        { "title": "Entitlement", "value": r.entitlement },
                        { "title": "State", "value": r.state.as_str() },
                    ]},
                    { "type": "TextBlock", "text": r.justification, "wrap": true, "isSubtle": true }
                ],
                "actions": [{ "type": "Action.OpenUrl", "title": "Open in Sallyport", "url": e.url }]
            }
        }]
    })
}

/// POST one notification. Any answer but 2xx is an error (retried by the caller).
pub async fn send(
    http: &reqwest::Client,
    w: &WebhookConfig,
    secrets: &SecretStore,
    e: &Event<'_>,
) -> Result<(), String> {
    let url = match (&w.url, &w.url_secret) {
        (Some(u), _) => u.clone(),
        (None, Some(name)) => secrets
            .get(name)
            .map(|s| s.expose().to_owned())
            .ok_or_else(|| format!("webhook `{}`: secret `{name}` is not available", w.name))?,
        (None, None) => return Err(format!("webhook `{}` has no URL", w.name)),
    };
    let body = match w.format {
        WebhookFormat::Json => json_body(e),
        WebhookFormat::Slack => slack_body(e),
        WebhookFormat::Teams => teams_body(e),
    };
    let bytes = serde_json::to_vec(&body).map_err(|err| err.to_string())?;
    let mut req = http
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-Sallyport-Event", e.topic)
        .header("X-Sallyport-Delivery", e.delivery.to_string());
    if let Some(name) = &w.signing_secret {
        let key = secrets
            .get(name)
            .ok_or_else(|| format!("webhook `{}`: secret `{name}` is not available", w.name))?;
        req = req.header(
            SIGNATURE_HEADER,
            sign(key.expose().as_bytes(), e.at / 1000, &bytes),
        );
    }
    // The URL may itself be a credential (Slack, Teams): errors name the webhook, not the URL.
    let res = req
        .body(bytes)
        .send()
        .await
        .map_err(|err| format!("webhook `{}`: {}", w.name, err.without_url()))?;
    let status = res.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("webhook `{}` answered {status}", w.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signature is HMAC-SHA256 over `t.body`, as documented (RFC 4231 test case 2 key).
    #[test]
    fn signature_matches_an_independent_hmac() {
        let sig = sign(b"Jefe", 1_700_000_000, b"{\"a\":1}");
        assert!(sig.starts_with("t=1700000000,v1="), "{sig}");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").expect("key");
        mac.update(b"1700000000.{\"a\":1}");
        let want = hex::encode(mac.finalize().into_bytes());
        assert_eq!(sig, format!("t=1700000000,v1={want}"));
        assert_ne!(sig, sign(b"Jefe", 1_700_000_000, b"{\"a\":2}"));
    }

    /// A Slack or Teams URL is a credential: a failed call names the webhook, never the URL.
    #[tokio::test]
    async fn errors_do_not_reveal_the_url() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let url = format!("http://127.0.0.1:{port}/services/T0/B0/s3cr3t-token");
        let mut secrets = SecretStore::new();
        secrets.insert("slack_url", crate::secret::Secret::new(url));
        let w = WebhookConfig {
            name: "chat".into(),
            url: None,
            url_secret: Some("slack_url".into()),
            format: WebhookFormat::Slack,
            signing_secret: None,
            events: vec![],
            entitlements: vec![],
        };
        let r: Request = serde_json::from_value(json!({
            "id": "r1", "entitlement": "app/x",
            "requester": { "id": "alice", "groups": [] },
            "duration_secs": 60, "justification": "j", "state": "pending",
            "created_at": 1, "updated_at": 1, "pending_until": 2,
            "break_glass_allowed": false, "version": 0
        }))
        .expect("request");
        let e = Event {
            delivery: 1,
            topic: "approved",
            request: &r,
            url: "http://sp/requests/r1".into(),
            at: 1000,
        };
        let err = send(&reqwest::Client::new(), &w, &secrets, &e)
            .await
            .expect_err("nothing listens");
        assert!(err.contains("webhook `chat`"), "{err}");
        assert!(
            !err.contains("s3cr3t") && !err.contains("/services/"),
            "{err}"
        );
    }

    #[test]
    fn slack_text_is_escaped() {
        assert_eq!(slack_escape("<@here> & co"), "&lt;@here&gt; &amp; co");
    }
}
