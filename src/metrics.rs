//! Prometheus metrics, kept in atomics and rendered in the text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::domain::Transition;
use crate::store::Counts;

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    http: Mutex<BTreeMap<(String, u16), u64>>,
    events: Mutex<BTreeMap<String, u64>>,
    jobs: Mutex<BTreeMap<(String, &'static str), u64>>,
    plugin_errors: Mutex<BTreeMap<String, u64>>,
    expiry_lateness_ms_sum: AtomicU64,
    expiry_count: AtomicU64,
}

fn snapshot<K: Ord + Clone>(m: &Mutex<BTreeMap<K, u64>>) -> BTreeMap<K, u64> {
    m.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

fn bump<K: Ord>(m: &Mutex<BTreeMap<K, u64>>, k: K) {
    *m.lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(k)
        .or_default() += 1;
}

impl Metrics {
    /// Count an HTTP response.
    pub fn http(&self, method: &str, status: u16) {
        bump(&self.http, (method.to_owned(), status));
    }

    /// Count the audit events of a persisted transition.
    pub fn transitions(&self, t: &Transition) {
        for e in &t.events {
            bump(&self.events, e.action.clone());
            if e.action == "grant.expired"
                && let Some(l) = e.after.get("lateness_ms").and_then(|v| v.as_u64())
            {
                self.expiry_lateness_ms_sum.fetch_add(l, Ordering::Relaxed);
                self.expiry_count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Count a job run.
    pub fn job(&self, kind: &str, outcome: &'static str) {
        bump(&self.jobs, (kind.to_owned(), outcome));
    }

    /// Count a plugin failure.
    pub fn plugin_error(&self, code: &str) {
        bump(&self.plugin_errors, code.to_owned());
    }

    /// Render, with gauges from the database.
    pub fn render(&self, counts: Option<&Counts>) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP sallyport_http_responses_total HTTP responses by method and status."
        );
        let _ = writeln!(out, "# TYPE sallyport_http_responses_total counter");
        for ((m, s), n) in snapshot(&self.http) {
            let _ = writeln!(
                out,
                "sallyport_http_responses_total{{method=\"{m}\",status=\"{s}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP sallyport_events_total Audit events written by this process, by action."
        );
        let _ = writeln!(out, "# TYPE sallyport_events_total counter");
        for (a, n) in snapshot(&self.events) {
            let _ = writeln!(out, "sallyport_events_total{{action=\"{a}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP sallyport_jobs_total Jobs run by this process, by kind and outcome."
        );
        let _ = writeln!(out, "# TYPE sallyport_jobs_total counter");
        for ((k, o), n) in snapshot(&self.jobs) {
            let _ = writeln!(
                out,
                "sallyport_jobs_total{{kind=\"{k}\",outcome=\"{o}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP sallyport_plugin_errors_total Plugin calls that failed, by error code."
        );
        let _ = writeln!(out, "# TYPE sallyport_plugin_errors_total counter");
        for (c, n) in snapshot(&self.plugin_errors) {
            let _ = writeln!(out, "sallyport_plugin_errors_total{{code=\"{c}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP sallyport_expiry_lateness_ms Total lateness of grant expiries handled by this process."
        );
        let _ = writeln!(out, "# TYPE sallyport_expiry_lateness_ms summary");
        let _ = writeln!(
            out,
            "sallyport_expiry_lateness_ms_sum {}",
            self.expiry_lateness_ms_sum.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "sallyport_expiry_lateness_ms_count {}",
            self.expiry_count.load(Ordering::Relaxed)
        );
        if let Some(c) = counts {
            let _ = writeln!(out, "# HELP sallyport_requests Requests by state.");
            let _ = writeln!(out, "# TYPE sallyport_requests gauge");
            for (s, n) in &c.requests {
                let _ = writeln!(out, "sallyport_requests{{state=\"{s}\"}} {n}");
            }
            let _ = writeln!(
                out,
                "# HELP sallyport_jobs_queued Jobs in the queue by kind."
            );
            let _ = writeln!(out, "# TYPE sallyport_jobs_queued gauge");
            for (k, n) in &c.jobs {
                let _ = writeln!(out, "sallyport_jobs_queued{{kind=\"{}\"}} {n}", k.as_str());
            }
            let _ = writeln!(
                out,
                "# HELP sallyport_revocations_pending Revocations not yet confirmed by their connector."
            );
            let _ = writeln!(out, "# TYPE sallyport_revocations_pending gauge");
            let _ = writeln!(
                out,
                "sallyport_revocations_pending {}",
                c.revocations_pending
            );
            let _ = writeln!(
                out,
                "# HELP sallyport_audit_events Events in the audit chain."
            );
            let _ = writeln!(out, "# TYPE sallyport_audit_events gauge");
            let _ = writeln!(out, "sallyport_audit_events {}", c.audit_events);
        }
        out
    }
}
