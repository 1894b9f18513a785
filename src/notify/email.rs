//! E-mail: templates (HTML + plain text, from `web/templates/email`), approval links, and SMTP
//! through lettre (STARTTLS, TLS, or plain to a loopback server only).

use handlebars::Handlebars;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Serialize;

use crate::config::{SmtpConfig, SmtpSecurity};
use crate::domain::{Millis, Principal, Request, Verdict, format_duration, format_utc};
use crate::secret::{Secret, SecretStore, random_b64};
use crate::service::token_hash;
use crate::store::ApprovalLink;

/// The e-mail templates, as embedded at build time.
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "review.html",
        include_str!("../../web/templates/email/review.html.hbs"),
    ),
    (
        "review.txt",
        include_str!("../../web/templates/email/review.txt.hbs"),
    ),
    (
        "notice.html",
        include_str!("../../web/templates/email/notice.html.hbs"),
    ),
    (
        "notice.txt",
        include_str!("../../web/templates/email/notice.txt.hbs"),
    ),
];

/// A message ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedMail {
    /// Subject (one line).
    pub subject: String,
    /// Plain-text part.
    pub text: String,
    /// HTML part.
    pub html: String,
}

/// The Approve and Deny links of one reviewer's message.
#[derive(Debug, Clone)]
pub struct ReviewLinks {
    /// Opens the confirmation page for approving.
    pub approve: String,
    /// Opens the confirmation page for denying.
    pub deny: String,
}

/// What a message is about.
#[derive(Debug)]
pub struct MailInput<'a> {
    /// `review_needed`, `approved`...
    pub topic: &'a str,
    /// The request.
    pub request: &'a Request,
    /// The recipient, when a person Sallyport knows.
    pub recipient: Option<&'a Principal>,
    /// The request's page.
    pub deep_link: String,
    /// Approve / Deny links (review requests).
    pub review_links: Option<&'a ReviewLinks>,
    /// The links act without signing in.
    pub link_only: bool,
    /// The configured warning lead time.
    pub expiring_lead_secs: u64,
}

/// Two fresh links (approve, deny) for one reviewer: the tokens to put in the message and the
/// records (hashes only) to store.
#[derive(Debug)]
pub struct Minted {
    /// The approve token (256 random bits, base64url).
    pub approve_token: Secret,
    /// The deny token.
    pub deny_token: Secret,
    /// What is stored: hashes, bound to the request, the reviewer and the action.
    pub records: Vec<ApprovalLink>,
}

/// Mint the approval links of `reviewer` for `r`; they expire when the request would time out.
pub fn mint_links(r: &Request, reviewer: &Principal, now: Millis) -> Minted {
    let approve = random_b64();
    let deny = random_b64();
    let record = |token: &str, action: &str| ApprovalLink {
        hash: token_hash(token),
        request_id: r.id.clone(),
        reviewer: reviewer.id.clone(),
        principal: reviewer.clone(),
        action: action.to_owned(),
        created_at: now,
        expires_at: r.pending_until,
        used_at: None,
    };
    let records = vec![
        record(&approve, Verdict::Approve.as_str()),
        record(&deny, Verdict::Deny.as_str()),
    ];
    Minted {
        approve_token: Secret::new(approve),
        deny_token: Secret::new(deny),
        records,
    }
}

#[derive(Debug, Serialize)]
struct MailView {
    heading: String,
    intro: String,
    greeting: String,
    entitlement: String,
    requester: String,
    duration: String,
    justification: String,
    ticket: Option<String>,
    state: String,
    reason: Option<String>,
    ends: Option<String>,
    deep_link: String,
    approve: Option<String>,
    deny: Option<String>,
    link_only: bool,
    links_expire: String,
    /// An action request: its exact parameters (one line each).
    action: Option<Vec<ParamLine>>,
}

#[derive(Debug, Serialize)]
struct ParamLine {
    name: String,
    value: String,
}

/// Renders messages.
#[derive(Debug)]
pub struct Mailer {
    html: Handlebars<'static>,
    text: Handlebars<'static>,
}

/// One line: no control characters (no header injection through names or ids).
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

impl Mailer {
    /// Compile the templates (HTML escaped, text verbatim; both strict).
    pub fn new() -> Result<Mailer, String> {
        let mut html = Handlebars::new();
        html.set_strict_mode(true);
        let mut text = Handlebars::new();
        text.set_strict_mode(true);
        text.register_escape_fn(handlebars::no_escape);
        for (name, body) in TEMPLATES {
            if body.contains("{{{") {
                return Err(format!("e-mail template `{name}` uses {{{{{{ }}}}}}"));
            }
            let reg = if name.ends_with(".html") {
                &mut html
            } else {
                &mut text
            };
            reg.register_template_string(name, *body)
                .map_err(|e| format!("e-mail template `{name}`: {e}"))?;
        }
        Ok(Mailer { html, text })
    }

    /// Render one message.
    pub fn render(&self, m: &MailInput<'_>) -> Result<RenderedMail, String> {
        let r = m.request;
        let requester = r
            .requester
            .name
            .clone()
            .unwrap_or_else(|| r.requester.id.clone());
        let ent = &r.entitlement;
        let ends = r.grant.as_ref().map(|g| format_utc(g.expires_at));
        let ends_text = ends.clone().unwrap_or_default();
        let action = r.action.as_ref().map(|a| {
            a.parameters
                .iter()
                .map(|(k, v)| ParamLine {
                    name: one_line(k),
                    value: one_line(&match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    }),
                })
                .collect::<Vec<_>>()
        });
        let (label, heading, intro) = match m.topic {
            "review_needed" if action.is_some() => (
                "Review needed",
                format!("{requester} asks to run {ent}"),
                format!(
                    "{requester} asks approval to run {ent} once, with exactly the parameters below. An approval is valid for {}. You are one of the people who can approve it.",
                    format_duration(r.duration_secs)
                ),
            ),
            "approved" if action.is_some() => (
                "Approved",
                format!("{ent} was approved"),
                format!(
                    "{requester} may run {ent} once with the parameters below, until {}.",
                    r.action
                        .as_ref()
                        .and_then(|a| a.valid_until)
                        .map(format_utc)
                        .unwrap_or_default()
                ),
            ),
            "review_needed" => (
                "Review needed",
                format!("{requester} asks for {ent}"),
                format!(
                    "{requester} asks for {ent} for {}. You are one of the people who can approve it.",
                    format_duration(r.duration_secs)
                ),
            ),
            "approved" => (
                "Approved",
                format!("{ent} was approved"),
                format!(
                    "The request of {requester} for {ent} was approved; access is being put in place."
                ),
            ),
            "denied" => (
                "Denied",
                format!("{ent} was denied"),
                format!("The request of {requester} for {ent} was denied."),
            ),
            "active" => (
                "Active",
                format!("{ent} is active until {ends_text}"),
                format!("Access to {ent} for {requester} is in place until {ends_text}."),
            ),
            "expiring" => (
                "Ending soon",
                format!("{ent} ends at {ends_text}"),
                format!(
                    "Access to {ent} for {requester} ends at {ends_text} (in about {}). Request it again if the work is not done.",
                    format_duration(m.expiring_lead_secs)
                ),
            ),
            "expired" => (
                "Ended",
                format!("{ent} has ended"),
                format!("Access to {ent} for {requester} reached its end and was taken away."),
            ),
            "revoked" => (
                "Revoked",
                format!("{ent} was revoked"),
                format!("Access to {ent} for {requester} was revoked before its end."),
            ),
            "ended" => (
                "Ended early",
                format!("{ent} was ended early"),
                format!("{requester} ended their access to {ent} before its end."),
            ),
            "cancelled" => (
                "Withdrawn",
                format!("{ent} was withdrawn"),
                format!("{requester} withdrew their request for {ent}."),
            ),
            "timed_out" => (
                "Timed out",
                format!("{ent} timed out"),
                format!(
                    "Nobody decided the request of {requester} for {ent} in time; it was closed."
                ),
            ),
            "failed" => (
                "Failed",
                format!("{ent} could not be granted"),
                format!(
                    "Sallyport could not put access to {ent} in place for {requester}; nothing was granted."
                ),
            ),
            "break_glass" => (
                "BREAK-GLASS",
                format!("{requester} approved their own {ent}"),
                format!(
                    "{requester} used break-glass to approve their own request for {ent}. Check that this was an emergency."
                ),
            ),
            other => return Err(format!("no e-mail for topic `{other}`")),
        };
        let view = MailView {
            heading: one_line(&heading),
            intro: one_line(&intro),
            greeting: m
                .recipient
                .map(|p| p.name.clone().unwrap_or_else(|| p.id.clone()))
                .map_or_else(|| "Hello,".to_owned(), |n| format!("Hello {n},")),
            entitlement: ent.clone(),
            // One line too: a display name from the identity provider cannot forge lines.
            requester: one_line(&requester),
            duration: format_duration(r.duration_secs),
            // One line: a requester cannot forge extra "Approve:" lines in the text part.
            justification: one_line(&r.justification),
            ticket: r.ticket.as_deref().map(one_line),
            state: r.state.as_str().to_owned(),
            reason: r.reason.clone(),
            ends,
            deep_link: m.deep_link.clone(),
            approve: m.review_links.map(|l| l.approve.clone()),
            deny: m.review_links.map(|l| l.deny.clone()),
            link_only: m.link_only,
            links_expire: format_utc(r.pending_until),
            action,
        };
        let (html_t, text_t) = if m.topic == "review_needed" {
            ("review.html", "review.txt")
        } else {
            ("notice.html", "notice.txt")
        };
        Ok(RenderedMail {
            subject: one_line(&format!("[Sallyport] {label}: {ent} for {requester}")),
            html: self
                .html
                .render(html_t, &view)
                .map_err(|e| format!("rendering {html_t}: {e}"))?,
            text: self
                .text
                .render(text_t, &view)
                .map_err(|e| format!("rendering {text_t}: {e}"))?,
        })
    }
}

/// Send one message through the configured SMTP server.
pub async fn send_smtp(
    smtp: &SmtpConfig,
    secrets: &SecretStore,
    to: &str,
    msg: &RenderedMail,
) -> Result<(), String> {
    let from: Mailbox = smtp
        .from
        .parse()
        .map_err(|e| format!("smtp.from `{}`: {e}", smtp.from))?;
    let to: Mailbox = to
        .parse()
        .map_err(|e| format!("recipient `{to}` is not an address: {e}"))?;
    let message = Message::builder()
        .from(from)
        .to(to)
        .subject(msg.subject.clone())
        .multipart(MultiPart::alternative_plain_html(
            msg.text.clone(),
            msg.html.clone(),
        ))
        .map_err(|e| format!("building the message: {e}"))?;
    let builder = match smtp.security {
        SmtpSecurity::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)
            .map_err(|e| format!("SMTP {}: {e}", smtp.host))?,
        SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host)
            .map_err(|e| format!("SMTP {}: {e}", smtp.host))?,
        // Checked at configuration time: plain only to loopback.
        SmtpSecurity::Plain => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host),
    };
    let mut builder = builder.port(smtp.port).timeout(Some(smtp.timeout));
    if let (Some(user), Some(name)) = (&smtp.username, &smtp.password_secret) {
        let password = secrets
            .get(name)
            .ok_or_else(|| format!("secret `{name}` is not available"))?;
        builder = builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
    }
    let transport = builder.build();
    transport
        .send(message)
        .await
        .map(|_| ())
        .map_err(|e| format!("SMTP {}:{}: {e}", smtp.host, smtp.port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Grant, PluginRef, State};

    const EVIL: &str = "<script>alert(1)</script>\r\nBcc: x@evil.example";

    fn request() -> Request {
        let p = Principal {
            id: "alice".into(),
            email: Some("alice@example.com".into()),
            name: Some(EVIL.into()),
            groups: vec![],
        };
        Request {
            id: "r1".into(),
            entitlement: "app/x".into(),
            requester: p,
            duration_secs: 3600,
            justification: EVIL.into(),
            ticket: Some(EVIL.into()),
            state: State::Active,
            created_at: 1,
            updated_at: 1,
            pending_until: 10_000,
            break_glass_allowed: false,
            requirements: vec![],
            reviews: vec![],
            reason: Some(EVIL.into()),
            approval_reason: None,
            break_glass: false,
            decided_by: None,
            grant: Some(Grant {
                handle: serde_json::json!({}),
                summary: "s".into(),
                plugin: PluginRef {
                    name: "p".into(),
                    version: "1".into(),
                    sha256: "h".into(),
                },
                activated_at: 1,
                expires_at: 3_600_001,
            }),
            revocation: None,
            action: None,
            version: 1,
        }
    }

    /// A review mail for an action shows every parameter, exactly, in both parts; hostile
    /// values stay inert and on one line.
    #[test]
    fn action_review_shows_the_exact_parameters() {
        let m = Mailer::new().expect("templates");
        let mut r = request();
        r.grant = None;
        r.entitlement = "deploy/production".into();
        let mut params = serde_json::Map::new();
        params.insert("version".into(), serde_json::json!("v1.4.2"));
        params.insert("replicas".into(), serde_json::json!(3));
        params.insert("note".into(), serde_json::json!(EVIL));
        r.action = Some(crate::domain::ActionDetails {
            digest: crate::domain::digest(&params),
            parameters: params,
            workload: None,
            approved_at: None,
            valid_until: None,
            consumed_at: None,
            consumed_by: None,
        });
        let links = ReviewLinks {
            approve: "http://sp/link/a".into(),
            deny: "http://sp/link/d".into(),
        };
        let out = m
            .render(&MailInput {
                topic: "review_needed",
                request: &r,
                recipient: None,
                deep_link: "http://sp/requests/r1".into(),
                review_links: Some(&links),
                link_only: false,
                expiring_lead_secs: 900,
            })
            .expect("renders");
        assert!(out.text.contains("    version = v1.4.2\n"), "{}", out.text);
        assert!(out.text.contains("    replicas = 3\n"), "{}", out.text);
        assert!(
            out.text
                .contains("asks approval to run deploy/production once"),
            "{}",
            out.text
        );
        assert!(!out.text.contains("\r\nBcc"), "{}", out.text);
        assert!(out.html.contains("<code>v1.4.2</code>"), "{}", out.html);
        assert!(!out.html.contains("<script>"), "{}", out.html);
    }

    /// Every topic renders both parts; hostile text is escaped in HTML and never breaks the
    /// subject onto a second (header) line.
    #[test]
    fn every_topic_renders_and_escapes() {
        let m = Mailer::new().expect("templates");
        let r = request();
        let links = ReviewLinks {
            approve: "http://sp/link/a".into(),
            deny: "http://sp/link/d".into(),
        };
        for topic in crate::config::TOPICS {
            let out = m
                .render(&MailInput {
                    topic,
                    request: &r,
                    recipient: Some(&r.requester),
                    deep_link: "http://sp/requests/r1".into(),
                    review_links: Some(&links),
                    link_only: false,
                    expiring_lead_secs: 900,
                })
                .unwrap_or_else(|e| panic!("{topic}: {e}"));
            assert!(
                !out.subject.contains('\n') && !out.subject.contains('\r'),
                "{topic}"
            );
            assert!(!out.html.contains("<script>"), "{topic}: {}", out.html);
            assert!(out.html.contains("&lt;script&gt;"), "{topic}");
            assert!(out.text.contains("http://sp/requests/r1"), "{topic}");
            if *topic == "review_needed" {
                assert!(out.text.contains("Approve: http://sp/link/a"));
                assert!(out.html.contains("href=\"http://sp/link/d\""));
            }
        }
    }

    #[test]
    fn minted_links_store_only_hashes_bound_to_reviewer_and_action() {
        let r = request();
        let bob = Principal {
            id: "bob".into(),
            email: None,
            name: None,
            groups: vec!["leads".into()],
        };
        let m = mint_links(&r, &bob, 5);
        assert_ne!(m.approve_token.expose(), m.deny_token.expose());
        assert_eq!(m.approve_token.expose().len(), 43);
        for (rec, token, action) in [
            (&m.records[0], &m.approve_token, "approve"),
            (&m.records[1], &m.deny_token, "deny"),
        ] {
            assert_eq!(rec.hash, token_hash(token.expose()));
            assert_ne!(rec.hash, token.expose());
            assert_eq!(
                (rec.reviewer.as_str(), rec.action.as_str(), rec.expires_at),
                ("bob", action, r.pending_until)
            );
        }
    }
}
