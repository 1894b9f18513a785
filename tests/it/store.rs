//! The store conformance suite: the same checks on SQLite and PostgreSQL.

use std::collections::BTreeSet;
use std::sync::Arc;

use sallyport::domain::{
    Action, Channel, EntitlementRules, JobKind, NewRequest, PolicyOutcome, Principal, Request,
    Transition,
};
use sallyport::store::{
    ApprovalLink, AuditFilter, DeliveryState, NewDelivery, NotifyStore, OutboxMessage,
    RequestFilter, SqlStore, Store, StoreError, TokenRecord, TokenScope, WriteCtx,
};

use crate::db_or_skip;
use crate::harness::Backend;
use crate::lifecycle::tamper;

macro_rules! both {
    ($name:ident, $body:ident) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $body(Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $body(Backend::Postgres).await;
            }
        }
    };
}

both!(compare_and_set, cas_on);
both!(job_queue, jobs_on);
both!(concurrent_claims, claims_on);
both!(audit_chain, audit_on);
both!(listing_and_tokens, listing_on);
both!(notification_outbox_and_links, notify_on);

fn principal(id: &str) -> Principal {
    Principal {
        id: id.into(),
        email: None,
        name: None,
        groups: vec!["eng".into()],
    }
}

fn rules(id: &str, ttl: u64) -> EntitlementRules {
    EntitlementRules {
        id: id.into(),
        max_duration_secs: 3600,
        default_duration_secs: 600,
        requester_groups: vec!["eng".into()],
        requester_users: vec![],
        justification_pattern: None,
        ticket_required: false,
        pending_ttl_secs: ttl,
        break_glass: false,
    }
}

fn new_request(id: &str, who: &str, ent: &str, now: i64, ttl: u64) -> Transition {
    Request::create(
        id.into(),
        NewRequest {
            requester: principal(who),
            duration_secs: Some(60),
            justification: "because".into(),
            ticket: None,
            channel: Channel::Api,
        },
        &rules(ent, ttl),
        now,
    )
    .expect("create")
}

async fn store(url: &str) -> SqlStore {
    SqlStore::connect(url, 8).await.expect("connect")
}

async fn cas_on(backend: Backend) {
    let db = db_or_skip!(backend);
    let s = store(&db.url).await;
    let t = new_request("r1", "alice", "e/x", 1000, 60);
    s.insert_request(&t, &WriteCtx::default())
        .await
        .expect("insert");
    let r = s.get_request("r1").await.expect("get").expect("exists");
    assert_eq!(r.version, 1);
    assert!(matches!(
        s.insert_request(&t, &WriteCtx::default()).await,
        Err(StoreError::Db(_))
    ));

    let deny = |r: &Request| {
        r.apply(
            Action::Evaluated {
                outcome: PolicyOutcome::Deny {
                    reason: "no".into(),
                },
                plugin: None,
            },
            2000,
        )
        .expect("deny")
    };
    let t1 = deny(&r);
    let t2 = deny(&r);
    let events_before = s.counts().await.expect("counts").audit_events;
    s.commit(
        &t1,
        &WriteCtx {
            request_id: Some("http-1".into()),
        },
        None,
    )
    .await
    .expect("first wins");
    assert!(matches!(
        s.commit(&t2, &WriteCtx::default(), None).await,
        Err(StoreError::Conflict)
    ));
    let after = s.counts().await.expect("counts").audit_events;
    assert_eq!(after, events_before + 1, "the loser wrote no event");
    let r = s.get_request("r1").await.expect("get").expect("exists");
    assert_eq!((r.version, r.state.as_str()), (2, "denied"));
    let ev = s
        .audit(&AuditFilter {
            subject: Some("r1".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("audit");
    assert_eq!(
        ev.last().and_then(|e| e.request_id.clone()).as_deref(),
        Some("http-1")
    );
    s.close().await;
    db.cleanup().await;
}

async fn jobs_on(backend: Backend) {
    let db = db_or_skip!(backend);
    let s = store(&db.url).await;
    // A timeout job due at 1000 + 5 s.
    s.insert_request(
        &new_request("r1", "alice", "e/x", 1000, 5),
        &WriteCtx::default(),
    )
    .await
    .expect("insert");
    assert_eq!(s.next_due().await.expect("due"), Some(6000));
    assert!(
        s.claim_jobs("w1", 5999, 1000, 10)
            .await
            .expect("claim")
            .is_empty(),
        "not due yet"
    );
    let jobs = s.claim_jobs("w1", 6000, 1000, 10).await.expect("claim");
    assert_eq!(jobs.len(), 1);
    let job = jobs[0].clone();
    assert_eq!(
        (job.kind, job.request_id.as_str()),
        (JobKind::Timeout, "r1")
    );
    // Leased: nobody else gets it until the lease runs out.
    assert!(
        s.claim_jobs("w2", 6500, 1000, 10)
            .await
            .expect("claim")
            .is_empty()
    );
    assert_eq!(s.next_due().await.expect("due"), Some(7000));
    let stolen = s.claim_jobs("w2", 7001, 1000, 10).await.expect("claim");
    assert_eq!(
        stolen.len(),
        1,
        "an expired lease is claimable (crashed worker)"
    );
    // Extending a lease only works for its holder: w1 lost it to w2, then w2's lease lapses.
    s.extend_lease("w1", &[job.id], 99_999)
        .await
        .expect("extend");
    let w3 = s.claim_jobs("w3", 8002, 1000, 10).await.expect("claim");
    assert_eq!(w3.len(), 1, "w1's extension did not apply");
    s.extend_lease("w3", &[job.id], 50_000)
        .await
        .expect("extend");
    assert!(
        s.claim_jobs("w4", 20_000, 1000, 10)
            .await
            .expect("claim")
            .is_empty(),
        "w3 extended it"
    );

    // Retry: later run_at, attempts counted, lock released.
    s.retry_job(&stolen[0], 20_000, "boom")
        .await
        .expect("retry");
    assert_eq!(s.next_due().await.expect("due"), Some(20_000));
    let again = s.claim_jobs("w2", 20_000, 1000, 10).await.expect("claim");
    assert_eq!(again[0].attempts, 1);

    // Re-enqueued while running: finishing the old generation leaves the new one.
    let r = s.get_request("r1").await.expect("get").expect("exists");
    let mut t = r.apply(Action::TimeOut, 20_000).expect("time out");
    t.jobs.push(sallyport::domain::JobSpec {
        kind: JobKind::Timeout,
        request_id: "r1".into(),
        run_at: 30_000,
    });
    s.commit(&t, &WriteCtx::default(), None)
        .await
        .expect("commit");
    s.complete_job(&again[0]).await.expect("complete");
    assert_eq!(
        s.next_due().await.expect("due"),
        Some(30_000),
        "the newer generation stays"
    );
    let newer = s.claim_jobs("w2", 30_000, 1000, 10).await.expect("claim");
    assert_eq!(newer.len(), 1);
    assert!(newer[0].generation > again[0].generation);
    s.complete_job(&newer[0]).await.expect("complete");
    assert_eq!(s.next_due().await.expect("due"), None);
    s.close().await;
    db.cleanup().await;
}

async fn claims_on(backend: Backend) {
    let db = db_or_skip!(backend);
    let s = Arc::new(store(&db.url).await);
    for i in 0..60 {
        s.insert_request(
            &new_request(&format!("r{i:03}"), "alice", "e/x", 0, 1),
            &WriteCtx::default(),
        )
        .await
        .expect("insert");
    }
    // Four workers claim concurrently: every job exactly once.
    let mut tasks = Vec::new();
    for w in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for _ in 0..200 {
                let got = s
                    .claim_jobs(&format!("w{w}"), 10_000, 60_000, 3)
                    .await
                    .expect("claim");
                if got.is_empty() {
                    break;
                }
                mine.extend(got.into_iter().map(|j| j.id));
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let unique: BTreeSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), 60, "claimed {} times", all.len());
    assert_eq!(unique.len(), 60);
    s.close().await;
    db.cleanup().await;
}

async fn audit_on(backend: Backend) {
    let db = db_or_skip!(backend);
    let s = store(&db.url).await;
    for i in 0..5 {
        s.insert_request(
            &new_request(&format!("r{i}"), "alice", "e/x", i, 60),
            &WriteCtx::default(),
        )
        .await
        .expect("insert");
    }
    let ok = s.verify_audit().await.expect("verify");
    assert!(ok.ok() && ok.events == 5 && ok.head_seq == 5, "{ok:?}");
    let since = s
        .audit(&AuditFilter {
            since: Some(3),
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("since");
    assert_eq!(since.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 5]);
    // Newest first: the latest events, not the oldest, when there are more than the limit;
    // and the entitlement filter is applied by the store, before the limit.
    s.insert_request(
        &new_request("r5", "alice", "e/y", 5, 60),
        &WriteCtx::default(),
    )
    .await
    .expect("insert");
    let seqs = |v: Vec<sallyport::audit::AuditRecord>| v.iter().map(|e| e.seq).collect::<Vec<_>>();
    let newest = s
        .audit(&AuditFilter {
            newest_first: true,
            limit: 2,
            ..Default::default()
        })
        .await
        .expect("newest");
    assert_eq!(seqs(newest), vec![6, 5]);
    let of_x = s
        .audit(&AuditFilter {
            entitlement: Some("e/x".into()),
            newest_first: true,
            limit: 2,
            ..Default::default()
        })
        .await
        .expect("entitlement");
    assert_eq!(seqs(of_x), vec![5, 4]);
    let of_y = s
        .audit(&AuditFilter {
            entitlement: Some("e/y".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("entitlement");
    assert_eq!(seqs(of_y), vec![6]);

    // Edit.
    tamper(
        &db.url,
        "UPDATE audit_events SET after = '{\"state\":\"active\"}' WHERE seq = 2",
    )
    .await;
    let bad = s.verify_audit().await.expect("verify");
    assert_eq!(bad.first_bad.as_ref().map(|b| b.seq), Some(2), "{bad:?}");
    s.close().await;
    db.cleanup().await;

    // Delete in the middle, and at the end.
    let db = db_or_skip!(backend);
    let s = store(&db.url).await;
    for i in 0..5 {
        s.insert_request(
            &new_request(&format!("r{i}"), "alice", "e/x", i, 60),
            &WriteCtx::default(),
        )
        .await
        .expect("insert");
    }
    tamper(&db.url, "DELETE FROM audit_events WHERE seq = 5").await;
    let bad = s.verify_audit().await.expect("verify");
    assert_eq!(bad.first_bad.as_ref().map(|b| b.seq), Some(5), "{bad:?}");
    tamper(&db.url, "DELETE FROM audit_events WHERE seq = 3").await;
    let bad = s.verify_audit().await.expect("verify");
    assert_eq!(bad.first_bad.as_ref().map(|b| b.seq), Some(3), "{bad:?}");
    // Insert a forged event at the end, head untouched.
    tamper(
        &db.url,
        "INSERT INTO audit_events (seq, at, actor, action, subject, before, after, channel, prev_hash, hash) \
         VALUES (6, 9, 'user:mallory', 'request.approved', 'r1', 'null', '{}', 'api', 'x', 'y')",
    )
    .await;
    let bad = s.verify_audit().await.expect("verify");
    assert_eq!(
        bad.first_bad.as_ref().map(|b| b.seq),
        Some(3),
        "still the first problem: {bad:?}"
    );
    s.close().await;
    db.cleanup().await;
}

async fn listing_on(backend: Backend) {
    let db = db_or_skip!(backend);
    let s = store(&db.url).await;
    let ids = ["01", "02", "03", "04", "05"];
    for (i, id) in ids.iter().enumerate() {
        let who = if i % 2 == 0 { "alice" } else { "bob" };
        let ent = if i < 3 { "e/x" } else { "e/y" };
        s.insert_request(
            &new_request(id, who, ent, i as i64, 60),
            &WriteCtx::default(),
        )
        .await
        .expect("insert");
    }
    let list = |f: RequestFilter| {
        let s = &s;
        async move {
            s.list_requests(&f)
                .await
                .expect("list")
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list(RequestFilter {
            limit: 10,
            ..Default::default()
        })
        .await,
        vec!["05", "04", "03", "02", "01"]
    );
    assert_eq!(
        list(RequestFilter {
            requester: Some("alice".into()),
            limit: 10,
            ..Default::default()
        })
        .await,
        vec!["05", "03", "01"]
    );
    assert_eq!(
        list(RequestFilter {
            entitlement: Some("e/y".into()),
            limit: 10,
            ..Default::default()
        })
        .await,
        vec!["05", "04"]
    );
    assert_eq!(
        list(RequestFilter {
            before: Some("04".into()),
            limit: 2,
            ..Default::default()
        })
        .await,
        vec!["03", "02"]
    );
    assert_eq!(
        list(RequestFilter {
            states: vec![sallyport::domain::State::Denied],
            limit: 10,
            ..Default::default()
        })
        .await,
        Vec::<String>::new()
    );

    let rec = TokenRecord {
        id: "t1".into(),
        user_id: "alice".into(),
        principal: principal("alice"),
        name: "cli".into(),
        scope: TokenScope::Api,
        created_at: 1,
        expires_at: 10_000,
        last_used_at: None,
        revoked_at: None,
    };
    s.insert_token(&rec, "hash-1").await.expect("token");
    assert_eq!(
        s.find_token("hash-1").await.expect("find"),
        Some(rec.clone())
    );
    assert_eq!(s.find_token("hash-2").await.expect("find"), None);
    assert!(
        !s.revoke_token("t1", Some("bob"), 5).await.expect("revoke"),
        "not bob's"
    );
    assert!(
        s.revoke_token("t1", Some("alice"), 5)
            .await
            .expect("revoke")
    );
    assert!(
        !s.revoke_token("t1", Some("alice"), 6)
            .await
            .expect("revoke"),
        "only once"
    );
    assert_eq!(
        s.list_tokens("alice", 10).await.expect("list")[0].revoked_at,
        Some(5)
    );
    // Newest first, at most `limit`; pruning deletes only tokens dead before the cutoff.
    for (id, created, expires, revoked) in [
        ("t2", 2, 100, None),            // expired at 100
        ("t3", 3, 1_000_000, Some(150)), // revoked at 150
        ("t4", 4, 1_000_000, None),      // alive
        ("t5", 5, 300, None),            // expired at 300, after the cutoff
    ] {
        let t = TokenRecord {
            id: id.into(),
            created_at: created,
            expires_at: expires,
            ..rec.clone()
        };
        s.insert_token(&t, &format!("hash-{id}"))
            .await
            .expect("token");
        if let Some(at) = revoked {
            assert!(s.revoke_token(id, None, at).await.expect("revoke"));
        }
    }
    let ids = |v: Vec<TokenRecord>| v.into_iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.list_tokens("alice", 3).await.expect("list")),
        vec!["t5", "t4", "t3"]
    );
    assert_eq!(
        s.prune_tokens(200).await.expect("prune"),
        3,
        "t1 (revoked at 5), t2, t3"
    );
    assert_eq!(
        ids(s.list_tokens("alice", 10).await.expect("list")),
        vec!["t5", "t4"]
    );
    assert_eq!(s.find_token("hash-t2").await.expect("find"), None);
    assert_eq!(s.prune_tokens(200).await.expect("prune"), 0);

    // Single-use secrets: taken once, only for their purpose, only before their deadline.
    let now = sallyport::service::now_ms();
    let data = serde_json::json!({ "user": "alice" });
    s.put_one_time("h1", "cli-code", &data, now + 60_000)
        .await
        .expect("put");
    s.put_one_time("h2", "cli-code", &data, now - 1)
        .await
        .expect("put expired");
    assert_eq!(
        s.take_one_time("h1", "oidc", now).await.expect("take"),
        None,
        "wrong purpose"
    );
    assert_eq!(
        s.take_one_time("h1", "cli-code", now).await.expect("take"),
        Some(data)
    );
    assert_eq!(
        s.take_one_time("h1", "cli-code", now).await.expect("take"),
        None,
        "used once"
    );
    assert_eq!(
        s.take_one_time("h2", "cli-code", now).await.expect("take"),
        None,
        "expired"
    );
    s.close().await;
    db.cleanup().await;
}

async fn notify_on(backend: Backend) {
    let db = db_or_skip!(backend);
    let s = store(&db.url).await;
    // People: remembered with their latest groups.
    let mut bob = principal("bob");
    s.remember_person(&bob, 1).await.expect("remember");
    bob.groups = vec!["leads".into()];
    s.remember_person(&bob, 2).await.expect("remember again");
    assert_eq!(s.people().await.expect("people"), vec![bob.clone()]);
    assert_eq!(s.find_person("bob").await.expect("find"), Some(bob.clone()));
    assert_eq!(s.find_person("nobody").await.expect("find"), None);

    // Deliveries: queued once per key; the cursor only moves forward.
    let d = |key: &str, run_at: i64| NewDelivery {
        key: key.into(),
        request_id: "r1".into(),
        topic: "approved".into(),
        channel: "email".into(),
        target: "user:alice".into(),
        event_seq: 3,
        run_at,
    };
    assert_eq!(s.notify_cursor("r1").await.expect("cursor"), 0);
    s.add_deliveries("r1", 3, &[d("k1", 10), d("k2", 50)], 1)
        .await
        .expect("add");
    s.add_deliveries("r1", 2, &[d("k1", 10)], 1)
        .await
        .expect("add again");
    assert_eq!(
        s.notify_cursor("r1").await.expect("cursor"),
        3,
        "never backwards"
    );
    assert_eq!(
        s.deliveries_for("r1").await.expect("list").len(),
        2,
        "keys are unique"
    );
    assert_eq!(s.next_delivery_due().await.expect("due"), Some(10));
    let claimed = s.claim_deliveries("w1", 20, 1000, 10).await.expect("claim");
    assert_eq!(claimed.len(), 1, "k2 is not due");
    assert!(
        s.claim_deliveries("w2", 30, 1000, 10)
            .await
            .expect("claim")
            .is_empty(),
        "leased"
    );
    // Only the claim holder records the outcome.
    s.retry_delivery(claimed[0].id, "w2", 40, "not mine")
        .await
        .expect("retry");
    s.finish_delivery(claimed[0].id, "w2", DeliveryState::Sent, None, 40)
        .await
        .expect("finish");
    assert_eq!(
        s.deliveries_for("r1").await.expect("list")[0].state,
        "queued"
    );
    s.retry_delivery(claimed[0].id, "w1", 40, "smtp down")
        .await
        .expect("retry");
    let again = s.claim_deliveries("w1", 40, 1000, 10).await.expect("claim");
    assert_eq!((again.len(), again[0].attempts), (1, 1));
    assert_eq!(again[0].last_error.as_deref(), Some("smtp down"));
    s.finish_delivery(again[0].id, "w1", DeliveryState::Sent, None, 41)
        .await
        .expect("finish");
    let all = s.deliveries_for("r1").await.expect("list");
    assert_eq!(
        (all[0].state.as_str(), all[1].state.as_str()),
        ("sent", "queued")
    );
    assert_eq!(s.next_delivery_due().await.expect("due"), Some(50));

    // Approval links: found by hash, used once (with the sibling), not after expiry.
    let link = |hash: &str, action: &str, expires_at: i64| ApprovalLink {
        hash: hash.into(),
        request_id: "r1".into(),
        reviewer: "bob".into(),
        principal: bob.clone(),
        action: action.into(),
        created_at: 1,
        expires_at,
        used_at: None,
    };
    // (`hx` is carol's: using bob's links leaves hers alone.)
    let hx = ApprovalLink {
        reviewer: "carol".into(),
        ..link("hx", "approve", 5)
    };
    s.insert_links(&[link("ha", "approve", 100), link("hd", "deny", 100), hx])
        .await
        .expect("links");
    assert_eq!(
        s.find_link("ha").await.expect("find").map(|l| l.principal),
        Some(bob.clone())
    );
    assert!(!s.use_link("hx", 6).await.expect("use"), "expired");
    assert!(s.use_link("ha", 10).await.expect("use"));
    assert!(!s.use_link("ha", 11).await.expect("use"), "once");
    assert!(
        !s.use_link("hd", 11).await.expect("use"),
        "the sibling is used up too"
    );
    assert_eq!(
        s.find_link("hd")
            .await
            .expect("find")
            .and_then(|l| l.used_at),
        Some(10)
    );
    s.delete_links(&["ha".into(), "hx".into()])
        .await
        .expect("delete");
    assert!(
        s.find_link("ha").await.expect("find").is_some(),
        "used links stay (they say so)"
    );
    assert!(
        s.find_link("hx").await.expect("find").is_none(),
        "unused ones go"
    );

    // The dev outbox, newest first.
    for n in 1..=2 {
        s.put_outbox(&OutboxMessage {
            id: 0,
            recipient: "bob@example.com".into(),
            subject: format!("m{n}"),
            text_body: "t".into(),
            html_body: "<p>h</p>".into(),
            request_id: "r1".into(),
            created_at: n,
        })
        .await
        .expect("outbox");
    }
    let out = s.outbox(10).await.expect("outbox");
    let first = s.outbox_message(out[1].id).await.expect("message");
    assert_eq!(first.map(|m| m.subject), Some("m1".to_owned()));
    assert_eq!(s.outbox_message(-1).await.expect("message"), None);
    assert_eq!(
        out.iter().map(|m| m.subject.as_str()).collect::<Vec<_>>(),
        ["m2", "m1"]
    );
    s.close().await;
    db.cleanup().await;
}
