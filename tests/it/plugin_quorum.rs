//! The built-in `quorum` approval plugin, run in the real sandbox: every rule.

use sallyport::plugin::{
    ActionRequest, Decision, EvaluationContext, Plugin, Review, Subject, ValidateFailure,
};
use sallyport::secret::SecretStore;
use serde_json::json;

use crate::support::*;

fn quorum() -> Plugin {
    builtin(&host(), "quorum", None, &SecretStore::new())
}

async fn decide(
    p: &Plugin,
    settings: &serde_json::Value,
    requester: (&str, &[&str]),
    dur: u64,
    reviews: Vec<Review>,
    now: i64,
) -> Decision {
    let ctx = eval_ctx(
        access_request(
            principal(requester.0, requester.1),
            dur,
            "a sufficiently long justification",
        ),
        &settings.to_string(),
        reviews,
        now,
    );
    p.evaluate(&ctx).await.expect("evaluates").decision
}

fn approve_by(id: &str, groups: &[&str]) -> Review {
    review(principal(id, groups), true)
}

fn deny_by(id: &str, groups: &[&str]) -> Review {
    review(principal(id, groups), false)
}

fn pending(d: &Decision) -> &Vec<sallyport::plugin::Requirement> {
    match d {
        Decision::Pending { requirements } => requirements,
        other => panic!("expected pending, got {other:?}"),
    }
}

fn approved(d: &Decision) -> bool {
    matches!(
        d,
        Decision::Approve {
            break_glass: false,
            ..
        }
    )
}

#[tokio::test]
async fn n_of_m_users_and_groups() {
    let p = quorum();
    let s = json!({"stages": [{"name": "leads", "users": ["bob", "carol"], "groups": ["sre"], "count": 2}]});
    let d = decide(&p, &s, ("alice", &[]), 3600, vec![], MONDAY_10_UTC).await;
    let reqs = pending(&d);
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].name, "leads");
    assert_eq!(reqs[0].needed, 2);
    assert!(reqs[0].approved_by.is_empty());
    // Who may approve is exposed for the UI's "who will have to approve".
    assert!(reqs[0].admits("bob", &[]) && reqs[0].admits("zed", &["sre".into()]));

    let d = decide(
        &p,
        &s,
        ("alice", &[]),
        3600,
        vec![approve_by("bob", &[])],
        MONDAY_10_UTC,
    )
    .await;
    assert_eq!(pending(&d)[0].approved_by, ["bob"]);
    // A member of the group counts as the second approval.
    let d = decide(
        &p,
        &s,
        ("alice", &[]),
        3600,
        vec![approve_by("bob", &[]), approve_by("zed", &["sre"])],
        MONDAY_10_UTC,
    )
    .await;
    assert!(approved(&d), "{d:?}");
    // Someone outside users and groups does not count.
    let d = decide(
        &p,
        &s,
        ("alice", &[]),
        3600,
        vec![approve_by("bob", &[]), approve_by("mallory", &["dev"])],
        MONDAY_10_UTC,
    )
    .await;
    assert_eq!(pending(&d)[0].approved_by, ["bob"]);
}

#[tokio::test]
async fn stages_combine_with_and_and_groups_with_or() {
    let p = quorum();
    let s = json!({"stages": [
        {"name": "team lead", "groups": ["leads", "managers"], "count": 1},
        {"name": "security", "groups": ["security"], "count": 1}
    ]});
    let d = decide(
        &p,
        &s,
        ("alice", &[]),
        3600,
        vec![approve_by("bob", &["managers"])],
        MONDAY_10_UTC,
    )
    .await;
    let reqs = pending(&d);
    assert_eq!(
        reqs[0].approved_by,
        ["bob"],
        "OR across groups: managers counts for team lead"
    );
    assert!(reqs[1].approved_by.is_empty(), "security still missing");
    let d = decide(
        &p,
        &s,
        ("alice", &[]),
        3600,
        vec![
            approve_by("bob", &["managers"]),
            approve_by("sam", &["security"]),
        ],
        MONDAY_10_UTC,
    )
    .await;
    assert!(approved(&d), "{d:?}");
}

#[tokio::test]
async fn one_person_counts_once_across_stages() {
    let p = quorum();
    let s = json!({"stages": [
        {"name": "a", "groups": ["leads"], "count": 1},
        {"name": "b", "groups": ["leads", "security"], "count": 1}
    ]});
    // bob is in both groups: his one approval satisfies only one stage.
    let d = decide(
        &p,
        &s,
        ("alice", &[]),
        3600,
        vec![approve_by("bob", &["leads", "security"])],
        MONDAY_10_UTC,
    )
    .await;
    let satisfied = pending(&d).iter().filter(|r| r.satisfied()).count();
    assert_eq!(satisfied, 1);
    // bob (leads+security) approving first must not block sam (security only) from completing:
    // the assignment puts bob on `a` and sam on `b`.
    let d = decide(
        &p,
        &s,
        ("alice", &[]),
        3600,
        vec![
            approve_by("bob", &["leads", "security"]),
            approve_by("sam", &["security"]),
        ],
        MONDAY_10_UTC,
    )
    .await;
    assert!(approved(&d), "{d:?}");
}

#[tokio::test]
async fn requester_review_never_counts() {
    let p = quorum();
    let s = json!({"stages": [{"groups": ["leads"], "count": 1}]});
    // alice is a lead herself: her own approval does not count.
    let d = decide(
        &p,
        &s,
        ("alice", &["leads"]),
        3600,
        vec![approve_by("alice", &["leads"])],
        MONDAY_10_UTC,
    )
    .await;
    assert!(pending(&d)[0].approved_by.is_empty(), "{d:?}");
    // Nor does her own denial deny.
    let d = decide(
        &p,
        &s,
        ("alice", &["leads"]),
        3600,
        vec![deny_by("alice", &["leads"])],
        MONDAY_10_UTC,
    )
    .await;
    assert!(matches!(d, Decision::Pending { .. }), "{d:?}");
}

#[tokio::test]
async fn eligible_denial_denies_ineligible_is_ignored_latest_wins() {
    let p = quorum();
    let s = json!({"stages": [{"users": ["bob", "carol"], "count": 2}]});
    let d = decide(
        &p,
        &s,
        ("alice", &[]),
        3600,
        vec![deny_by("mallory", &[])],
        MONDAY_10_UTC,
    )
    .await;
    assert!(
        matches!(d, Decision::Pending { .. }),
        "ineligible deny ignored: {d:?}"
    );
    let mut r = deny_by("bob", &[]);
    r.comment = Some("not during the freeze".into());
    let d = decide(
        &p,
        &s,
        ("alice", &[]),
        3600,
        vec![approve_by("carol", &[]), r],
        MONDAY_10_UTC,
    )
    .await;
    match d {
        Decision::Deny { reason } => {
            assert!(
                reason.contains("bob") && reason.contains("not during the freeze"),
                "{reason}"
            )
        }
        other => panic!("expected deny, got {other:?}"),
    }
    // bob denied, then changed his mind: the latest review counts.
    let d = decide(
        &p,
        &s,
        ("alice", &[]),
        3600,
        vec![
            deny_by("bob", &[]),
            approve_by("bob", &[]),
            approve_by("carol", &[]),
        ],
        MONDAY_10_UTC,
    )
    .await;
    assert!(approved(&d), "{d:?}");
}

#[tokio::test]
async fn auto_approve_by_group() {
    let p = quorum();
    let s = json!({
        "stages": [{"users": ["bob"]}],
        "auto_approve": [{"name": "sre", "requester_groups": ["sre"]}]
    });
    let d = decide(&p, &s, ("alice", &["sre"]), 3600, vec![], MONDAY_10_UTC).await;
    match &d {
        Decision::Approve {
            reason,
            break_glass,
        } => {
            assert!(!break_glass);
            assert!(reason.contains("sre"), "{reason}");
        }
        other => panic!("expected auto-approval, got {other:?}"),
    }
    let d = decide(&p, &s, ("alice", &["dev"]), 3600, vec![], MONDAY_10_UTC).await;
    assert!(matches!(d, Decision::Pending { .. }), "{d:?}");
}

#[tokio::test]
async fn auto_approve_in_a_weekly_window_in_a_time_zone() {
    let p = quorum();
    let s = json!({
        "stages": [{"users": ["bob"]}],
        "auto_approve": [{"window": {"time_zone": "Europe/Paris", "days": ["mon", "tue", "wed", "thu", "fri"], "from": "09:00", "to": "18:00"}}]
    });
    // Monday 10:00 UTC is 11:00 in Paris: inside.
    assert!(approved(
        &decide(&p, &s, ("alice", &[]), 3600, vec![], MONDAY_10_UTC).await
    ));
    // Monday 17:30 UTC is 18:30 in Paris: outside.
    let late = MONDAY_10_UTC + (7 * 60 + 30) * 60_000;
    assert!(matches!(
        decide(&p, &s, ("alice", &[]), 3600, vec![], late).await,
        Decision::Pending { .. }
    ));
    // Monday 07:30 UTC is 08:30 in Paris: outside; 08:30 UTC is 09:30: inside.
    let early = MONDAY_10_UTC - 150 * 60_000;
    assert!(matches!(
        decide(&p, &s, ("alice", &[]), 3600, vec![], early).await,
        Decision::Pending { .. }
    ));
    assert!(approved(
        &decide(&p, &s, ("alice", &[]), 3600, vec![], early + 60 * 60_000).await
    ));
    // Sunday at the same hour: outside.
    let sunday = MONDAY_10_UTC - 24 * 3_600_000;
    assert!(matches!(
        decide(&p, &s, ("alice", &[]), 3600, vec![], sunday).await,
        Decision::Pending { .. }
    ));
}

#[tokio::test]
async fn auto_approve_up_to_a_duration() {
    let p = quorum();
    let s = json!({
        "stages": [{"users": ["bob"]}],
        "auto_approve": [{"max_duration": "1h"}]
    });
    assert!(approved(
        &decide(&p, &s, ("alice", &[]), 3600, vec![], MONDAY_10_UTC).await
    ));
    assert!(matches!(
        decide(&p, &s, ("alice", &[]), 3601, vec![], MONDAY_10_UTC).await,
        Decision::Pending { .. }
    ));
    // An action request has no duration: a duration-bounded rule never matches it.
    let ctx = EvaluationContext {
        subject: Subject::Action(ActionRequest {
            id: "act-1".into(),
            kind: "deploy/production".into(),
            requester: principal("alice", &[]),
            parameters: "{}".into(),
            justification: "release".into(),
            created_at: MONDAY_10_UTC,
        }),
        settings: s.to_string(),
        reviews: vec![],
        now: MONDAY_10_UTC,
    };
    let d = p.evaluate(&ctx).await.expect("evaluates").decision;
    assert!(matches!(d, Decision::Pending { .. }), "{d:?}");
}

#[tokio::test]
async fn auto_approve_conditions_combine() {
    let p = quorum();
    let s = json!({
        "stages": [{"users": ["bob"]}],
        "auto_approve": [{"requester_groups": ["oncall"], "max_duration": "30m"}]
    });
    assert!(approved(
        &decide(&p, &s, ("alice", &["oncall"]), 1800, vec![], MONDAY_10_UTC).await
    ));
    assert!(!approved(
        &decide(&p, &s, ("alice", &["oncall"]), 3600, vec![], MONDAY_10_UTC).await
    ));
    assert!(!approved(
        &decide(&p, &s, ("alice", &[]), 1800, vec![], MONDAY_10_UTC).await
    ));
}

#[tokio::test]
async fn break_glass_self_approval_is_flagged() {
    let p = quorum();
    let s = json!({
        "stages": [{"users": ["bob"]}],
        "break_glass": {"enabled": true, "min_justification_chars": 20}
    });
    // Long enough justification (see `decide`): self-approval passes, flagged.
    let d = decide(
        &p,
        &s,
        ("alice", &[]),
        3600,
        vec![approve_by("alice", &[])],
        MONDAY_10_UTC,
    )
    .await;
    match &d {
        Decision::Approve {
            break_glass,
            reason,
        } => {
            assert!(*break_glass, "must be flagged");
            assert!(reason.contains("break-glass"), "{reason}");
        }
        other => panic!("expected break-glass approval, got {other:?}"),
    }
    // Too short a justification: the self-approval does not count.
    let ctx = eval_ctx(
        access_request(principal("alice", &[]), 3600, "oops"),
        &s.to_string(),
        vec![approve_by("alice", &[])],
        MONDAY_10_UTC,
    );
    let d = p.evaluate(&ctx).await.expect("evaluates").decision;
    assert!(matches!(d, Decision::Pending { .. }), "{d:?}");
    // Disabled: self-approval is ignored.
    let s = json!({"stages": [{"users": ["bob"]}]});
    let d = decide(
        &p,
        &s,
        ("alice", &[]),
        3600,
        vec![approve_by("alice", &[])],
        MONDAY_10_UTC,
    )
    .await;
    assert!(matches!(d, Decision::Pending { .. }), "{d:?}");
}

#[tokio::test]
async fn no_stage_and_no_rule_denies() {
    let p = quorum();
    let s = json!({"auto_approve": [{"requester_groups": ["sre"]}]});
    let d = decide(&p, &s, ("alice", &["dev"]), 3600, vec![], MONDAY_10_UTC).await;
    assert!(matches!(d, Decision::Deny { .. }), "{d:?}");
}

#[tokio::test]
async fn validate_gives_precise_paths() {
    let p = quorum();
    let cases = [
        (json!({}), "stages"),
        (
            json!({"stages": [{"users": ["bob"], "count": 0}]}),
            "stages[0].count",
        ),
        (
            json!({"stages": [{"users": ["bob"], "count": 2}]}),
            "stages[0].count",
        ),
        (json!({"stages": [{"count": 1}]}), "stages[0]"),
        (
            json!({"stages": [{"users": ["bob"]}], "auto_approve": [{"window": {"time_zone": "Mars/Olympus", "days": ["mon"], "from": "09:00", "to": "17:00"}}]}),
            "auto_approve[0].window.time_zone",
        ),
        (
            json!({"stages": [{"users": ["bob"]}], "auto_approve": [{"window": {"time_zone": "UTC", "days": ["mon"], "from": "18:00", "to": "09:00"}}]}),
            "auto_approve[0].window",
        ),
        (
            json!({"stages": [{"users": ["bob"]}], "auto_approve": [{"window": {"time_zone": "UTC", "days": ["someday"], "from": "09:00", "to": "17:00"}}]}),
            "auto_approve[0].window.days[0]",
        ),
        (
            json!({"stages": [{"users": ["bob"]}], "auto_approve": [{"max_duration": "forever"}]}),
            "auto_approve[0].max_duration",
        ),
        (
            json!({"stages": [{"users": ["bob"]}], "break_glass": {"enabled": true, "min_justification_chars": 0}}),
            "break_glass.min_justification_chars",
        ),
        (
            json!({"stages": [{"users": ["bob"], "colour": "red"}]}),
            "stages[0].colour",
        ),
        (json!({"stages": [{"users": "bob"}]}), "stages[0].users"),
    ];
    for (settings, path) in cases {
        match p.validate(&settings.to_string()).await {
            Err(ValidateFailure::Invalid(errs)) => assert!(
                errs.iter()
                    .any(|e| e.path.starts_with(path) && !e.message.is_empty()),
                "{settings}: wanted an error at {path}, got {errs:?}"
            ),
            other => panic!("{settings}: expected invalid, got {other:?}"),
        }
    }
    let good = json!({
        "stages": [{"name": "leads", "groups": ["leads"], "count": 2}],
        "auto_approve": [{"requester_groups": ["sre"], "max_duration": "2h30m",
            "window": {"time_zone": "America/New_York", "days": ["monday", "Tue"], "from": "09:00", "to": "24:00"}}],
        "break_glass": {"enabled": true}
    });
    p.validate(&good.to_string()).await.expect("valid settings");
}

#[tokio::test]
async fn invalid_settings_at_evaluate_are_an_error_not_a_decision() {
    let p = quorum();
    let ctx = eval_ctx(
        access_request(principal("alice", &[]), 60, "x"),
        "{\"stages\": 5}",
        vec![],
        MONDAY_10_UTC,
    );
    let err = p
        .evaluate(&ctx)
        .await
        .expect_err("no decision from bad settings");
    assert_eq!(err.code(), "plugin_reported_error");
}

#[tokio::test]
async fn decisions_name_the_plugin_build() {
    let p = quorum();
    let ctx = eval_ctx(
        access_request(principal("alice", &[]), 60, "x"),
        &json!({"stages": [{"users": ["bob"]}]}).to_string(),
        vec![],
        MONDAY_10_UTC,
    );
    let ev = p.evaluate(&ctx).await.expect("evaluates");
    assert_eq!(ev.plugin.name, "quorum");
    assert_eq!(ev.plugin.version, "0.1.0");
    assert_eq!(ev.plugin.sha256, p.identity().sha256);
}
