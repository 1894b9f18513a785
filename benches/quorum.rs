//! `quorum` evaluated in a fresh sandbox per call, against the same policy compiled natively.
//!
//! Run with `cargo bench --bench quorum`. Criterion reports the mean per call; after it, a
//! percentile pass prints p50/p99 for both and the throughput with every core busy, as a
//! markdown table for the README.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use sallyport::plugin::{
    AccessRequest, Channel, EvaluationContext, HostConfig, Manifest, Plugin, PluginHost, Principal,
    Review, Subject, Verdict,
};
use sallyport::secret::SecretStore;

/// The plugin's own policy code, compiled natively: the baseline.
#[path = "../plugins/quorum/src/policy.rs"]
#[allow(unreachable_pub, missing_docs, reason = "shared with the guest crate")]
mod policy;

const SETTINGS: &str = r#"{
  "stages": [
    {"name": "team lead", "groups": ["leads", "managers"], "count": 1},
    {"name": "security", "users": ["sam", "sue"], "groups": ["security"], "count": 1}
  ],
  "auto_approve": [
    {"name": "sre on hours", "requester_groups": ["sre"],
     "window": {"time_zone": "Europe/Paris", "days": ["mon","tue","wed","thu","fri"], "from": "09:00", "to": "18:00"},
     "max_duration": "1h"}
  ],
  "break_glass": {"enabled": true, "min_justification_chars": 20}
}"#;

/// Monday 2026-11-23 10:00 UTC.
const NOW: i64 = 1_795_428_000_000;

fn principal(id: &str, groups: &[&str]) -> Principal {
    Principal {
        id: id.into(),
        email: None,
        display_name: None,
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    }
}

fn ctx() -> EvaluationContext {
    let review = |id: &str, groups: &[&str]| Review {
        reviewer: principal(id, groups),
        verdict: Verdict::Approve,
        comment: None,
        at: NOW,
        channel: Channel::Web,
    };
    EvaluationContext {
        subject: Subject::Access(AccessRequest {
            id: "req-1".into(),
            entitlement: "aws/prod/admin".into(),
            requester: principal("alice", &["dev"]),
            duration_seconds: 7200,
            justification: "rotate the database credentials".into(),
            ticket: Some("OPS-1".into()),
            created_at: NOW,
        }),
        settings: SETTINGS.into(),
        reviews: vec![review("bob", &["leads"]), review("sam", &[])],
        now: NOW,
    }
}

/// The same work natively: parse the settings (as the guest's `evaluate` does), convert the
/// context, evaluate.
fn native(ctx: &EvaluationContext) -> policy::Outcome {
    let settings = match policy::parse_settings_for_evaluation(&ctx.settings) {
        Ok(s) => s,
        Err(e) => panic!("settings: {}", e.len()),
    };
    let Subject::Access(r) = &ctx.subject else {
        panic!("access request expected")
    };
    let conv = |p: &Principal| policy::Principal {
        id: p.id.clone(),
        groups: p.groups.clone(),
    };
    let request = policy::Request {
        requester: conv(&r.requester),
        duration_seconds: Some(r.duration_seconds),
        justification: r.justification.clone(),
    };
    let reviews: Vec<policy::Review> = ctx
        .reviews
        .iter()
        .map(|rv| policy::Review {
            reviewer: conv(&rv.reviewer),
            approve: rv.verdict == Verdict::Approve,
            comment: rv.comment.clone(),
        })
        .collect();
    policy::evaluate(&settings, &request, &reviews, ctx.now)
}

fn setup() -> (tokio::runtime::Runtime, Plugin) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let plugin = rt.block_on(async {
        let host = PluginHost::new(HostConfig::default()).expect("host");
        let b = sallyport::plugin::Builtin::get("quorum").expect("quorum");
        let m = Manifest::parse(b.manifest).expect("manifest");
        host.load(m, b.wasm, &SecretStore::new()).expect("load")
    });
    (rt, plugin)
}

fn bench(c: &mut Criterion) {
    let (rt, plugin) = setup();
    let cx = ctx();
    // Both must agree before we time anything.
    let sandboxed = rt
        .block_on(plugin.evaluate(&cx))
        .expect("evaluates")
        .decision;
    let natively = native(&cx);
    assert!(
        matches!(sandboxed, sallyport::plugin::Decision::Approve { .. })
            && matches!(natively, policy::Outcome::Approve { .. }),
        "{sandboxed:?} vs {natively:?}"
    );

    let mut g = c.benchmark_group("quorum");
    g.bench_function("sandbox (fresh instance per call)", |b| {
        b.to_async(&rt).iter(|| async {
            std::hint::black_box(plugin.evaluate(std::hint::black_box(&cx)).await)
        })
    });
    g.bench_function("native", |b| {
        b.iter(|| std::hint::black_box(native(std::hint::black_box(&cx))))
    });
    g.finish();
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    (at(0.50), at(0.99))
}

/// p50/p99 per call and throughput with two concurrent callers, printed as a table.
fn summary() {
    let (rt, plugin) = setup();
    let cx = ctx();
    const N: usize = 50_000;
    let sandbox: Vec<Duration> = rt.block_on(async {
        let mut v = Vec::with_capacity(N);
        for _ in 0..N {
            let t = Instant::now();
            let r = plugin.evaluate(&cx).await;
            v.push(t.elapsed());
            assert!(r.is_ok());
        }
        v
    });
    let mut nat = Vec::with_capacity(N);
    for _ in 0..N {
        let t = Instant::now();
        std::hint::black_box(native(&cx));
        nat.push(t.elapsed());
    }
    let (sp50, sp99) = percentiles(sandbox);
    let (np50, np99) = percentiles(nat);

    // Throughput: two tasks (one per core) evaluating back to back for two seconds.
    let window = Duration::from_secs(2);
    let total: u64 = rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let p = plugin.clone();
            let cx = cx.clone();
            tasks.push(tokio::spawn(async move {
                let end = Instant::now() + window;
                let mut n = 0u64;
                while Instant::now() < end {
                    let _ = std::hint::black_box(p.evaluate(&cx).await);
                    n += 1;
                }
                n
            }));
        }
        let mut sum = 0;
        for t in tasks {
            sum += t.await.unwrap_or(0);
        }
        sum
    });
    let per_sec = total as f64 / window.as_secs_f64();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!();
    println!("| quorum evaluation | p50 | p99 |");
    println!("| --- | --- | --- |");
    println!(
        "| sandbox, fresh instance per call | {:.1} µs | {:.1} µs |",
        us(sp50),
        us(sp99)
    );
    println!(
        "| native Rust, same policy code | {:.2} µs | {:.2} µs |",
        us(np50),
        us(np99)
    );
    println!(
        "| ratio sandbox / native | {:.0}× | {:.0}× |",
        us(sp50) / us(np50),
        us(sp99) / us(np99)
    );
    println!();
    println!("sandbox throughput, 2 concurrent callers: {per_sec:.0} evaluations/s");
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // Under `cargo test` (no `--bench`) criterion ran each benchmark once; skip the long pass.
    if std::env::args().any(|a| a == "--bench") {
        summary();
    }
}
