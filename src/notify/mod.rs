//! Notifications: e-mail (with one-click approval links) and webhooks, through a durable outbox.
//!
//! Two steps, both durable and idempotent:
//!
//! 1. **Expansion** ([`Notifier::expand`]): the notifier follows the audit chain (every
//!    transition is there already, so the request path pays nothing for notifications). A
//!    page of events after its cursor becomes rows in `deliveries`, one per recipient and
//!    channel (reviewers, requester, watchers, webhooks), each with a unique key, in one
//!    transaction with the cursor's move. The "expiring soon" warning is a delivery due
//!    `expiring_lead` before the grant ends.
//! 2. **Delivery** ([`Notifier::run`]): due rows are claimed for a lease, checked for relevance
//!    (a review request for a decided request is skipped), rendered, and sent; a failure is
//!    retried with exponential backoff until `notify.max_attempts`. A mail server outage delays
//!    mail; it never loses it.
//!
//! Rows hold no secrets: the approval links of a review request are minted when the message is
//! sent (only their hashes are stored) and forgotten again if sending fails.

pub mod email;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::domain::{Millis, Principal, Request, State};
use crate::jobs::backoff_ms;
use crate::service::{Service, now_ms};
use crate::store::{AuditFilter, Delivery, DeliveryState, NewDelivery, StoreError};

/// Longest the notifier sleeps before it looks at the audit chain and the outbox again.
const POLL: Duration = Duration::from_millis(500);
/// The `notify_cursor` row holding the notifier's position in the audit chain.
const CURSOR: &str = "*";
/// Deliveries are claimed for this long: longer than the slowest send (SMTP timeouts are at
/// most 300 s per command), so another replica does not send the same message meanwhile.
const LEASE_MS: i64 = 15 * 60_000;
/// Audit events turned into deliveries at a time.
const EXPAND_PAGE: u32 = 1000;
/// Deliveries sent at once.
const BATCH: u32 = 16;

/// The topic of an audit action, if people are told about it.
pub fn topic_of(action: &str) -> Option<&'static str> {
    Some(match action {
        "request.pending" => "review_needed",
        "request.approved" => "approved",
        "break_glass.used" => "break_glass",
        "request.denied" => "denied",
        "request.cancelled" => "cancelled",
        "request.timed_out" => "timed_out",
        "request.revoked" => "revoked",
        "grant.activated" => "active",
        "grant.failed" => "failed",
        "grant.expired" => "expired",
        "grant.ended" => "ended",
        _ => return None,
    })
}

/// Topics the requester hears about by e-mail.
const REQUESTER_TOPICS: &[&str] = &[
    "approved",
    "denied",
    "active",
    "expiring",
    "expired",
    "revoked",
    "timed_out",
    "failed",
];
/// Topics watchers hear about by e-mail.
const WATCHER_TOPICS: &[&str] = &[
    "approved",
    "denied",
    "active",
    "expired",
    "revoked",
    "ended",
    "timed_out",
    "failed",
    "break_glass",
];

/// Where mail goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailMode {
    /// No mail (no `[smtp]`, not dev mode): webhooks only.
    Off,
    /// To the `[smtp]` server.
    Smtp,
    /// Dev mode without `[smtp]`: to the outbox page.
    Outbox,
}

/// Turns audit events into deliveries and delivers them.
#[derive(Debug)]
pub struct Notifier {
    service: Service,
    public_url: url::Url,
    dev: bool,
    mail: email::Mailer,
    http: reqwest::Client,
    wake: Notify,
    worker: String,
}

impl Notifier {
    /// A notifier for a server reachable at `public_url`.
    pub fn new(
        service: Service,
        public_url: url::Url,
        dev: bool,
        worker: String,
    ) -> Result<Notifier, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Sallyport/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Notifier {
            service,
            public_url,
            dev,
            mail: email::Mailer::new()?,
            http,
            wake: Notify::new(),
            worker,
        })
    }

    /// Where mail goes under the live configuration.
    pub fn mail_mode(&self) -> MailMode {
        match (&self.service.policy().config.smtp, self.dev) {
            (Some(_), _) => MailMode::Smtp,
            (None, true) => MailMode::Outbox,
            (None, false) => MailMode::Off,
        }
    }

    /// An absolute link to a path of this server.
    pub fn link(&self, path: &str) -> String {
        self.public_url
            .join(path)
            .map_or_else(|_| path.to_owned(), |u| u.to_string())
    }

    /// Everyone Sallyport knows: the static directory, then people who signed in.
    async fn known_people(&self) -> Result<Vec<Principal>, StoreError> {
        let policy = self.service.policy();
        let mut known: Vec<Principal> = policy
            .config
            .users
            .iter()
            .filter_map(|u| policy.directory_principal(&u.id))
            .collect();
        for p in self.service.store().people().await? {
            if !known.iter().any(|k| k.id == p.id) {
                known.push(p);
            }
        }
        Ok(known)
    }

    /// Turn the next page of the audit chain into deliveries; returns how many events it read.
    ///
    /// The deliveries and the cursor's move are one transaction, and every delivery has a unique
    /// key, so a crash, a retry, or two replicas expanding the same page never send twice.
    pub async fn expand(&self) -> Result<usize, StoreError> {
        let store = self.service.store();
        let cursor = store.notify_cursor(CURSOR).await?;
        let events = store
            .audit(&AuditFilter {
                after_seq: Some(cursor),
                limit: EXPAND_PAGE,
                ..AuditFilter::default()
            })
            .await?;
        let Some(last) = events.last().map(|e| e.seq) else {
            return Ok(0);
        };
        let policy = self.service.policy();
        let cfg = &policy.config;
        let mail = self.mail_mode() != MailMode::Off;
        let now = now_ms();
        let mut out: Vec<NewDelivery> = Vec::new();
        // The page's notified events, per request, in order.
        let mut by_request: Vec<(String, Vec<(&'static str, i64)>)> = Vec::new();
        for ev in &events {
            let Some(topic) = topic_of(&ev.action) else {
                continue;
            };
            match by_request.iter_mut().find(|(id, _)| *id == ev.subject) {
                Some((_, list)) => list.push((topic, ev.seq)),
                None => by_request.push((ev.subject.clone(), vec![(topic, ev.seq)])),
            }
        }
        let anyone = mail || !cfg.webhooks.is_empty();
        // Loaded once per page, when a pending request needs its reviewers.
        let mut known: Option<Vec<Principal>> = None;
        for (id, list) in by_request.iter().filter(|_| anyone) {
            let Some(r) = store.get_request(id).await? else {
                continue;
            };
            let mut watchers: Vec<String> = cfg.notify.watchers.clone();
            if let Some(e) = policy.config.review_settings(&r) {
                watchers.extend(e.watchers.iter().cloned());
            }
            watchers.sort();
            watchers.dedup();
            let mut push =
                |topic: &str, channel: &str, target: String, seq: i64, run_at: Millis| {
                    let key = if topic == "review_needed" && channel == "email" {
                        // One review request per reviewer per request, however often stages
                        // change.
                        format!("{}/{topic}/{channel}/{target}", r.id)
                    } else {
                        format!("{}/{topic}/{channel}/{target}/{seq}", r.id)
                    };
                    out.push(NewDelivery {
                        key,
                        request_id: r.id.clone(),
                        topic: topic.to_owned(),
                        channel: channel.to_owned(),
                        target,
                        event_seq: seq,
                        run_at,
                    });
                };
            let reviewers = if mail && r.state == State::Pending {
                if known.is_none() {
                    known = Some(self.known_people().await?);
                }
                reviewers(&r, known.as_deref().unwrap_or_default())
            } else {
                Vec::new()
            };
            // (topic, event, due): every notified event, and the warning before an
            // activation's end.
            let mut notices: Vec<(&'static str, i64, Millis)> = Vec::new();
            for &(topic, seq) in list {
                notices.push((topic, seq, now));
                if topic == "active"
                    && let Some(g) = &r.grant
                {
                    let lead = crate::domain::secs_to_ms(cfg.notify.expiring_lead_secs);
                    let at = g.expires_at - lead;
                    if lead > 0 && at > g.activated_at {
                        notices.push(("expiring", seq, at));
                    }
                }
            }
            for &(topic, seq, due) in &notices {
                if mail {
                    if topic == "review_needed" {
                        for p in &reviewers {
                            push(topic, "email", format!("user:{}", p.id), seq, due);
                        }
                    }
                    if REQUESTER_TOPICS.contains(&topic) {
                        push(topic, "email", format!("user:{}", r.requester.id), seq, due);
                    }
                    if WATCHER_TOPICS.contains(&topic) {
                        for w in &watchers {
                            if w != &r.requester.id {
                                push(topic, "email", watcher_target(w), seq, due);
                            }
                        }
                    }
                }
                for w in cfg
                    .webhooks
                    .iter()
                    .filter(|w| w.wants(topic, &r.entitlement))
                {
                    push(topic, "webhook", w.name.clone(), seq, due);
                }
            }
        }
        store.add_deliveries(CURSOR, last, &out, now).await?;
        Ok(events.len())
    }

    /// Deliver due notifications until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(mail = ?self.mail_mode(), "notifier started");
        loop {
            if *shutdown.borrow() {
                break;
            }
            let store = self.service.store();
            // Catch up with the audit chain (bounded: a long backlog continues next round).
            for _ in 0..20 {
                match self.expand().await {
                    Ok(n) if n >= EXPAND_PAGE as usize => continue,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "turning audit events into notifications failed; retrying");
                        break;
                    }
                }
            }
            match store
                .claim_deliveries(&self.worker, now_ms(), LEASE_MS, BATCH)
                .await
            {
                Ok(batch) if !batch.is_empty() => {
                    let full = batch.len() == BATCH as usize;
                    let mut set = tokio::task::JoinSet::new();
                    for d in batch {
                        let me = self.clone();
                        set.spawn(async move { me.deliver(d).await });
                    }
                    while set.join_next().await.is_some() {}
                    if full {
                        continue;
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "claiming deliveries failed"),
            }
            let sleep = match store.next_delivery_due().await {
                Ok(Some(due)) => {
                    let ms = (due - now_ms()).clamp(20, POLL.as_millis() as i64);
                    Duration::from_millis(u64::try_from(ms).unwrap_or(20))
                }
                Ok(None) => POLL,
                Err(e) => {
                    tracing::error!(error = %e, "reading the outbox failed");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
        tracing::info!("notifier stopped");
    }

    /// Deliver one notification and record the outcome.
    async fn deliver(&self, d: Delivery) {
        let store = self.service.store();
        let outcome = self.try_deliver(&d).await;
        let now = now_ms();
        let recorded = match outcome {
            Ok(Sent::Yes) => {
                self.service.metrics().job("notify_delivery", "sent");
                store
                    .finish_delivery(d.id, &self.worker, DeliveryState::Sent, None, now)
                    .await
            }
            Ok(Sent::Skipped(why)) => {
                tracing::debug!(delivery = d.id, why, "notification no longer needed");
                store
                    .finish_delivery(d.id, &self.worker, DeliveryState::Skipped, Some(why), now)
                    .await
            }
            Err(e) => {
                self.service.metrics().job("notify_delivery", "error");
                let max = self.service.policy().config.notify.max_attempts;
                if d.attempts + 1 >= max {
                    tracing::error!(delivery = d.id, request = %d.request_id, topic = %d.topic, channel = %d.channel, error = %e, "giving up on a notification");
                    store
                        .finish_delivery(d.id, &self.worker, DeliveryState::Dead, Some(&e), now)
                        .await
                } else {
                    let at = now + backoff_ms(d.attempts, 300_000);
                    tracing::warn!(delivery = d.id, request = %d.request_id, topic = %d.topic, channel = %d.channel, attempt = d.attempts + 1, error = %e, "notification failed; retrying");
                    store.retry_delivery(d.id, &self.worker, at, &e).await
                }
            }
        };
        if let Err(e) = recorded {
            tracing::error!(delivery = d.id, error = %e, "could not record a delivery's outcome; it runs again after its lease");
        }
    }

    async fn try_deliver(&self, d: &Delivery) -> Result<Sent, String> {
        let store = self.service.store();
        let Some(r) = store
            .get_request(&d.request_id)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(Sent::Skipped("the request is gone"));
        };
        match d.channel.as_str() {
            "email" => self.send_email(d, &r).await,
            "webhook" => self.send_webhook(d, &r).await,
            _ => Ok(Sent::Skipped("unknown channel")),
        }
    }

    async fn send_email(&self, d: &Delivery, r: &Request) -> Result<Sent, String> {
        let mode = self.mail_mode();
        if mode == MailMode::Off {
            return Ok(Sent::Skipped("e-mail is not configured"));
        }
        let (address, person) = match d.target.split_once(':') {
            Some(("user", id)) => {
                // Known people first; else what the request itself knows of its requester; else
                // a reviewer named by an address who never signed in.
                let p = match self
                    .service
                    .known_person(id)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    Some(p) => Some(p),
                    None if id == r.requester.id => Some(r.requester.clone()),
                    None if id.contains('@') => Some(Principal {
                        id: id.to_owned(),
                        email: Some(id.to_owned()),
                        name: None,
                        groups: Vec::new(),
                    }),
                    None => None,
                };
                let addr = p
                    .as_ref()
                    .and_then(|p| p.email.clone())
                    .or_else(|| id.contains('@').then(|| id.to_owned()));
                (addr, p)
            }
            Some(("addr", a)) => (Some(a.to_owned()), None),
            _ => (None, None),
        };
        let Some(address) = address else {
            return Ok(Sent::Skipped(
                "no e-mail address is known for the recipient",
            ));
        };
        // Relevance at send time.
        match d.topic.as_str() {
            "review_needed" => {
                let Some(p) = &person else {
                    return Ok(Sent::Skipped("the reviewer is unknown"));
                };
                if !r.may_review(p) {
                    return Ok(Sent::Skipped(
                        "the request no longer needs this reviewer's review",
                    ));
                }
            }
            "expiring" if !still_active(r) => {
                return Ok(Sent::Skipped("the grant is no longer active"));
            }
            _ => {}
        }
        let policy = self.service.policy();
        let link_only = policy
            .config
            .review_settings(r)
            .is_some_and(|e| e.link_only_approval);
        let mut minted = Vec::new();
        let links = match (&d.topic[..], &person) {
            ("review_needed", Some(p)) => {
                let made = email::mint_links(r, p, now_ms());
                let urls = email::ReviewLinks {
                    approve: self.link(&format!("link/{}", made.approve_token.expose())),
                    deny: self.link(&format!("link/{}", made.deny_token.expose())),
                };
                minted = made.records;
                Some(urls)
            }
            _ => None,
        };
        if !minted.is_empty() {
            self.service
                .store()
                .insert_links(&minted)
                .await
                .map_err(|e| e.to_string())?;
        }
        let msg = self.mail.render(&email::MailInput {
            topic: &d.topic,
            request: r,
            recipient: person.as_ref(),
            deep_link: self.link(&format!("requests/{}", r.id)),
            review_links: links.as_ref(),
            link_only,
            expiring_lead_secs: policy.config.notify.expiring_lead_secs,
        })?;
        let result = match mode {
            MailMode::Smtp => match &policy.config.smtp {
                Some(smtp) => email::send_smtp(smtp, &policy.config.secrets, &address, &msg).await,
                None => Err("e-mail is no longer configured".to_owned()),
            },
            MailMode::Outbox => self
                .service
                .store()
                .put_outbox(&crate::store::OutboxMessage {
                    id: 0,
                    recipient: address.clone(),
                    subject: msg.subject.clone(),
                    text_body: msg.text.clone(),
                    html_body: msg.html.clone(),
                    request_id: r.id.clone(),
                    created_at: now_ms(),
                })
                .await
                .map_err(|e| e.to_string()),
            MailMode::Off => Err("e-mail is not configured".to_owned()),
        };
        match result {
            Ok(()) => Ok(Sent::Yes),
            Err(e) => {
                // Links that never left are forgotten; the retry mints new ones.
                let hashes: Vec<String> = minted.into_iter().map(|l| l.hash).collect();
                if let Err(de) = self.service.store().delete_links(&hashes).await {
                    tracing::warn!(error = %de, "could not forget unsent approval links (they expire with the request)");
                }
                Err(e)
            }
        }
    }

    async fn send_webhook(&self, d: &Delivery, r: &Request) -> Result<Sent, String> {
        let policy = self.service.policy();
        let Some(w) = policy.config.webhooks.iter().find(|w| w.name == d.target) else {
            return Ok(Sent::Skipped("the webhook is no longer configured"));
        };
        if d.topic == "expiring" && !still_active(r) {
            return Ok(Sent::Skipped("the grant is no longer active"));
        }
        let event = webhook::Event {
            delivery: d.id,
            topic: &d.topic,
            request: r,
            url: self.link(&format!("requests/{}", r.id)),
            at: now_ms(),
        };
        webhook::send(&self.http, w, &policy.config.secrets, &event).await?;
        Ok(Sent::Yes)
    }
}

enum Sent {
    Yes,
    Skipped(&'static str),
}

/// Everyone who may review `r` now and has not yet (not the requester), of `known` and the
/// users the requirements name.
fn reviewers(r: &Request, known: &[Principal]) -> Vec<Principal> {
    let mut out: Vec<Principal> = Vec::new();
    for q in r.requirements.iter().filter(|q| !q.satisfied()) {
        // Named but never seen: an id that is an address can still be mailed.
        let named = q
            .users
            .iter()
            .filter(|id| !known.iter().any(|k| &k.id == *id))
            .map(|id| Principal {
                id: id.clone(),
                email: None,
                name: None,
                groups: Vec::new(),
            });
        for p in known.iter().cloned().chain(named).filter(|p| q.admits(p)) {
            if p.id != r.requester.id && r.may_review(&p) && !out.iter().any(|o| o.id == p.id) {
                out.push(p);
            }
        }
    }
    out
}

/// The grant is in place and has not ended: an "ending soon" warning still makes sense.
fn still_active(r: &Request) -> bool {
    r.state == State::Active && r.grant.as_ref().is_some_and(|g| g.expires_at > now_ms())
}

/// `addr:` for an address, `user:` for a user id.
fn watcher_target(w: &str) -> String {
    if w.contains('@') {
        format!("addr:{w}")
    } else {
        format!("user:{w}")
    }
}
