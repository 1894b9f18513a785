//! The audit chain: append-only events, each carrying the hash of the one before.
//!
//! `hash = sha256(prev_hash || "\n" || canonical JSON of the event)`, where the canonical JSON
//! has sorted keys and no whitespace and includes the event's sequence number. The store keeps
//! the chain's head (last sequence number and hash) in its own row, so deleting the newest events
//! is detected too. [`Store::verify_audit`](crate::store::Store::verify_audit) walks the chain and names the first event that does not fit.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::domain::{Millis, PluginRef};

/// The `prev_hash` of the first event.
pub const GENESIS: &str = "sallyport-audit-genesis";

/// One stored audit event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the chain, from 1, without gaps.
    pub seq: i64,
    /// When it happened.
    pub at: Millis,
    /// `user:<id>`, `plugin:<name>` or `system`.
    pub actor: String,
    /// What happened, e.g. `request.approved`.
    pub action: String,
    /// What it happened to (a request id, a token id).
    pub subject: String,
    /// The relevant state before.
    pub before: Value,
    /// The relevant state after.
    pub after: Value,
    /// `web`, `email_link`, `api` or `system`.
    pub channel: String,
    /// The id of the HTTP request that caused it, when there was one.
    pub request_id: Option<String>,
    /// The plugin involved (name, version, sha256).
    pub plugin: Option<PluginRef>,
    /// The previous event's hash.
    pub prev_hash: String,
    /// This event's hash.
    pub hash: String,
}

impl AuditRecord {
    /// The canonical text that is hashed.
    pub fn canonical(&self) -> String {
        json!({
            "seq": self.seq,
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "subject": self.subject,
            "before": self.before,
            "after": self.after,
            "channel": self.channel,
            "request_id": self.request_id,
            "plugin": self.plugin,
        })
        .to_string()
    }

    /// The hash this event should carry, given its `prev_hash`.
    pub fn compute_hash(&self) -> String {
        chain_hash(&self.prev_hash, &self.canonical())
    }
}

/// `sha256(prev || "\n" || canonical)`, hex.
pub fn chain_hash(prev: &str, canonical: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(canonical.as_bytes());
    hex::encode(h.finalize())
}

/// The outcome of [`Store::verify_audit`](crate::store::Store::verify_audit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Events checked.
    pub events: u64,
    /// The head's sequence number.
    pub head_seq: i64,
    /// The first problem found, if any.
    pub first_bad: Option<BadEvent>,
}

impl VerifyReport {
    /// No problem found.
    pub fn ok(&self) -> bool {
        self.first_bad.is_none()
    }
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadEvent {
    /// The sequence number of the first event that does not fit (or the missing one).
    pub seq: i64,
    /// What is wrong.
    pub problem: String,
}

/// Incremental chain checker: feed it events in sequence order, then the head.
#[derive(Debug)]
pub struct Verifier {
    expected_seq: i64,
    prev_hash: String,
    events: u64,
    bad: Option<BadEvent>,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier {
            expected_seq: 1,
            prev_hash: GENESIS.to_owned(),
            events: 0,
            bad: None,
        }
    }
}

impl Verifier {
    /// Check the next event. Returns false once a problem was found.
    pub fn feed(&mut self, r: &AuditRecord) -> bool {
        if self.bad.is_some() {
            return false;
        }
        self.events += 1;
        let bad = |seq: i64, problem: String| Some(BadEvent { seq, problem });
        if r.seq != self.expected_seq {
            self.bad = bad(
                self.expected_seq.min(r.seq),
                if r.seq > self.expected_seq {
                    format!(
                        "event {} is missing (the chain jumps from {} to {})",
                        self.expected_seq,
                        self.expected_seq - 1,
                        r.seq
                    )
                } else {
                    format!("event {} appears out of order", r.seq)
                },
            );
        } else if r.prev_hash != self.prev_hash {
            self.bad = bad(
                r.seq,
                "its prev_hash does not match the previous event's hash (an event was inserted, deleted or edited before it)".into(),
            );
        } else if r.compute_hash() != r.hash {
            self.bad = bad(
                r.seq,
                "its content does not match its hash (the event was edited)".into(),
            );
        }
        self.expected_seq = r.seq + 1;
        self.prev_hash = r.hash.clone();
        self.bad.is_none()
    }

    /// Compare with the head and report.
    pub fn finish(mut self, head_seq: i64, head_hash: &str) -> VerifyReport {
        if self.bad.is_none() {
            let last = self.expected_seq - 1;
            if head_seq != last || head_hash != self.prev_hash {
                self.bad = Some(BadEvent {
                    seq: last + 1,
                    problem: format!(
                        "the chain ends at event {last}, but its head records event {head_seq}: events were deleted from the end, or the head was edited"
                    ),
                });
            }
        }
        VerifyReport {
            events: self.events,
            head_seq,
            first_bad: self.bad,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<AuditRecord> {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let mut r = AuditRecord {
                    seq,
                    at: seq * 10,
                    actor: "system".into(),
                    action: "x".into(),
                    subject: "s".into(),
                    before: Value::Null,
                    after: json!({"n": seq}),
                    channel: "system".into(),
                    request_id: None,
                    plugin: None,
                    prev_hash: prev.clone(),
                    hash: String::new(),
                };
                r.hash = r.compute_hash();
                prev = r.hash.clone();
                r
            })
            .collect()
    }

    fn check(events: &[AuditRecord], head: &AuditRecord) -> VerifyReport {
        let mut v = Verifier::default();
        for e in events {
            v.feed(e);
        }
        v.finish(head.seq, &head.hash)
    }

    #[test]
    fn detects_edit_insert_delete() {
        let c = chain(5);
        let head = c[4].clone();
        assert!(check(&c, &head).ok());

        let mut edited = c.clone();
        edited[2].actor = "user:mallory".into();
        assert_eq!(check(&edited, &head).first_bad.map(|b| b.seq), Some(3));

        let mut deleted = c.clone();
        deleted.remove(1);
        assert_eq!(check(&deleted, &head).first_bad.map(|b| b.seq), Some(2));

        let truncated = &c[..4];
        let r = check(truncated, &head);
        assert_eq!(r.first_bad.map(|b| b.seq), Some(5));

        let mut inserted = c.clone();
        let mut fake = c[1].clone();
        fake.seq = 3;
        inserted.insert(2, fake);
        for (i, e) in inserted.iter_mut().enumerate().skip(3) {
            e.seq = i as i64 + 1;
        }
        assert_eq!(check(&inserted, &head).first_bad.map(|b| b.seq), Some(3));
    }
}
