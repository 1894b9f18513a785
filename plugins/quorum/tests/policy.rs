//! Tests of the quorum policy (native).

use quorum::policy::*;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn settings(json: &str) -> Settings {
    parse_settings(json).unwrap_or_else(|e| panic!("settings should be valid, got {e:#?}"))
}

fn errors(json: &str) -> Vec<SettingError> {
    match parse_settings(json) {
        Ok(s) => panic!("settings should be invalid, got {s:#?}"),
        Err(e) => e,
    }
}

/// Asserts there is an error at `path` whose message contains every one of `parts`.
#[track_caller]
fn assert_error(errs: &[SettingError], path: &str, parts: &[&str]) {
    let found = errs
        .iter()
        .any(|e| e.path == path && parts.iter().all(|p| e.message.contains(p)));
    assert!(
        found,
        "no error at `{path}` containing {parts:?} in {errs:#?}"
    );
}

fn p(id: &str, groups: &[&str]) -> Principal {
    Principal {
        id: id.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

fn req(id: &str, groups: &[&str]) -> Request {
    Request {
        requester: p(id, groups),
        duration_seconds: Some(3600),
        justification: String::new(),
    }
}

fn yes(id: &str, groups: &[&str]) -> Review {
    Review {
        reviewer: p(id, groups),
        approve: true,
        comment: None,
    }
}

fn no(id: &str, groups: &[&str], comment: Option<&str>) -> Review {
    Review {
        reviewer: p(id, groups),
        approve: false,
        comment: comment.map(Into::into),
    }
}

/// Some instant; only matters for window rules.
const NOW: i64 = 1_717_405_200_000; // 2024-06-03T09:00:00Z, a Monday

fn ms(zoned: &str) -> i64 {
    zoned
        .parse::<jiff::Zoned>()
        .unwrap()
        .timestamp()
        .as_millisecond()
}

fn approved(reason: &str) -> Outcome {
    Outcome::Approve {
        reason: reason.into(),
        break_glass: false,
    }
}

/// The `approved_by` of each stage of a pending outcome.
#[track_caller]
fn progress(o: &Outcome) -> Vec<Vec<&str>> {
    match o {
        Outcome::Pending(reqs) => reqs
            .iter()
            .map(|r| r.approved_by.iter().map(String::as_str).collect())
            .collect(),
        other => panic!("expected pending, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Stages
// ---------------------------------------------------------------------------------------------

#[test]
fn one_of_two_users() {
    let s = settings(r#"{"stages": [{"name": "leads", "users": ["bob", "carol"]}]}"#);
    let r = req("alice", &[]);
    let o = evaluate(&s, &r, &[], NOW);
    assert_eq!(
        o,
        Outcome::Pending(vec![Requirement {
            name: "leads".into(),
            users: vec!["bob".into(), "carol".into()],
            groups: vec![],
            needed: 1,
            approved_by: vec![],
        }])
    );
    assert_eq!(
        evaluate(&s, &r, &[yes("carol", &[])], NOW),
        approved("1 of 1 stages satisfied")
    );
    // Someone not listed does not count.
    assert_eq!(
        progress(&evaluate(&s, &r, &[yes("dave", &[])], NOW)),
        vec![Vec::<&str>::new()]
    );
}

#[test]
fn two_of_three_group_members() {
    let s = settings(r#"{"stages": [{"groups": ["security"], "count": 2}]}"#);
    let r = req("alice", &[]);
    let one = [yes("x", &["security"]), yes("outsider", &["dev"])];
    let o = evaluate(&s, &r, &one, NOW);
    assert_eq!(progress(&o), vec![vec!["x"]]);
    let Outcome::Pending(reqs) = &o else {
        unreachable!()
    };
    assert_eq!(reqs[0].needed, 2);
    assert_eq!(reqs[0].name, "stage 1");
    assert_eq!(reqs[0].groups, vec!["security".to_string()]);
    let two = [yes("x", &["security"]), yes("y", &["dev", "security"])];
    assert_eq!(
        evaluate(&s, &r, &two, NOW),
        approved("1 of 1 stages satisfied")
    );
    // The same reviewer twice is one approval.
    let same = [yes("x", &["security"]), yes("x", &["security"])];
    assert_eq!(progress(&evaluate(&s, &r, &same, NOW)), vec![vec!["x"]]);
}

#[test]
fn stages_combine_with_and() {
    let s = settings(
        r#"{"stages": [
            {"name": "lead", "users": ["bob"]},
            {"name": "security", "groups": ["security"]}
        ]}"#,
    );
    let r = req("alice", &[]);
    assert_eq!(
        progress(&evaluate(&s, &r, &[yes("bob", &[])], NOW)),
        vec![vec!["bob"], vec![]]
    );
    assert_eq!(
        progress(&evaluate(&s, &r, &[yes("sec", &["security"])], NOW)),
        vec![vec![], vec!["sec"]]
    );
    assert_eq!(
        evaluate(&s, &r, &[yes("sec", &["security"]), yes("bob", &[])], NOW),
        approved("2 of 2 stages satisfied")
    );
}

#[test]
fn groups_are_or() {
    let s = settings(r#"{"stages": [{"users": ["bob"], "groups": ["leads", "managers"]}]}"#);
    let r = req("alice", &[]);
    assert_eq!(
        evaluate(&s, &r, &[yes("m", &["managers"])], NOW),
        approved("1 of 1 stages satisfied")
    );
    assert_eq!(
        evaluate(&s, &r, &[yes("l", &["leads"])], NOW),
        approved("1 of 1 stages satisfied")
    );
    assert_eq!(
        evaluate(&s, &r, &[yes("bob", &[])], NOW),
        approved("1 of 1 stages satisfied")
    );
    assert!(matches!(
        evaluate(&s, &r, &[yes("d", &["dev", "Leads"])], NOW),
        Outcome::Pending(_)
    ));
}

#[test]
fn one_reviewer_counts_toward_one_stage_only() {
    let s = settings(
        r#"{"stages": [
            {"name": "a", "users": ["bob"]},
            {"name": "b", "users": ["bob", "carol"]}
        ]}"#,
    );
    let r = req("alice", &[]);
    let o = evaluate(&s, &r, &[yes("bob", &[])], NOW);
    assert_eq!(progress(&o), vec![vec!["bob"], vec![]]);
    assert_eq!(
        evaluate(&s, &r, &[yes("bob", &[]), yes("carol", &[])], NOW),
        approved("2 of 2 stages satisfied")
    );
    // Two stages of the same group need two different people.
    let s = settings(r#"{"stages": [{"groups": ["ops"]}, {"groups": ["ops"]}]}"#);
    assert_eq!(
        progress(&evaluate(&s, &r, &[yes("o1", &["ops"])], NOW)),
        vec![vec!["o1"], vec![]]
    );
    assert_eq!(
        evaluate(&s, &r, &[yes("o1", &["ops"]), yes("o2", &["ops"])], NOW),
        approved("2 of 2 stages satisfied")
    );
}

#[test]
fn matching_finds_assignment_greedy_would_miss() {
    // carol could fill either stage; a greedy first-fit puts her in "leads" and then dave (a lead
    // only) finds "leads" full. The matching moves carol to "carol".
    let s = settings(
        r#"{"stages": [
            {"name": "leads", "groups": ["leads"]},
            {"name": "carol", "users": ["carol"]}
        ]}"#,
    );
    let r = req("alice", &[]);
    let reviews = [yes("carol", &["leads"]), yes("dave", &["leads"])];
    assert_eq!(
        evaluate(&s, &r, &reviews, NOW),
        approved("2 of 2 stages satisfied")
    );
    assert_eq!(
        progress(&evaluate(&s, &r, &reviews[..1], NOW)),
        vec![vec!["carol"], vec![]]
    );

    // With counts: u can do A or C (and only u can do C), x and y A or B, z only A, w only B.
    // Filling A with u first, as a greedy pass would, leaves C empty.
    let s = settings(
        r#"{"stages": [
            {"name": "A", "groups": ["a"], "count": 2},
            {"name": "B", "groups": ["b"], "count": 2},
            {"name": "C", "groups": ["c"], "count": 1}
        ]}"#,
    );
    let reviews = [
        yes("u", &["a", "c"]),
        yes("x", &["a", "b"]),
        yes("y", &["a", "b"]),
        yes("z", &["a"]),
        yes("w", &["b"]),
    ];
    // Pending before the last approval: 4 approvers for 5 slots.
    let o = evaluate(&s, &r, &reviews[..4], NOW);
    let prog = progress(&o);
    assert_eq!(prog.iter().map(Vec::len).sum::<usize>(), 4, "{prog:?}");
    // Everyone in at most one stage.
    let mut all: Vec<&str> = prog.concat();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 4);
    assert_eq!(
        evaluate(&s, &r, &reviews, NOW),
        approved("3 of 3 stages satisfied")
    );
    // Review order does not matter for the result.
    let mut rev = reviews.to_vec();
    rev.reverse();
    assert_eq!(
        evaluate(&s, &r, &rev, NOW),
        approved("3 of 3 stages satisfied")
    );
}

#[test]
fn approved_by_is_in_review_order() {
    let s = settings(r#"{"stages": [{"groups": ["g"], "count": 3}]}"#);
    let r = req("alice", &[]);
    let reviews = [yes("zed", &["g"]), yes("amy", &["g"])];
    assert_eq!(
        progress(&evaluate(&s, &r, &reviews, NOW)),
        vec![vec!["zed", "amy"]]
    );

    // Still in review order after the matching moved someone: x first fills A, then makes room
    // in A for u by moving to B.
    let s = settings(
        r#"{"stages": [
            {"name": "A", "groups": ["a"], "count": 2},
            {"name": "B", "users": ["x"]},
            {"name": "C", "groups": ["c"]}
        ]}"#,
    );
    let reviews = [yes("x", &["a"]), yes("w", &["a"]), yes("u", &["a"])];
    assert_eq!(
        progress(&evaluate(&s, &r, &reviews, NOW)),
        vec![vec!["w", "u"], vec!["x"], vec![]]
    );
}

#[test]
fn requester_review_never_counts() {
    let s = settings(r#"{"stages": [{"users": ["alice", "bob"]}]}"#);
    let r = req("alice", &["leads"]);
    assert_eq!(
        progress(&evaluate(&s, &r, &[yes("alice", &["leads"])], NOW)),
        vec![Vec::<&str>::new()]
    );
    // Nor does their deny.
    let o = evaluate(&s, &r, &[no("alice", &[], Some("oops"))], NOW);
    assert!(matches!(o, Outcome::Pending(_)), "{o:?}");
    assert_eq!(
        evaluate(&s, &r, &[no("alice", &[], None), yes("bob", &[])], NOW),
        approved("1 of 1 stages satisfied")
    );
}

#[test]
fn latest_review_per_reviewer_wins() {
    let s = settings(r#"{"stages": [{"users": ["bob"]}]}"#);
    let r = req("alice", &[]);
    assert_eq!(
        evaluate(
            &s,
            &r,
            &[no("bob", &[], Some("wait")), yes("bob", &[])],
            NOW
        ),
        approved("1 of 1 stages satisfied")
    );
    assert_eq!(
        evaluate(
            &s,
            &r,
            &[yes("bob", &[]), no("bob", &[], Some("changed my mind"))],
            NOW
        ),
        Outcome::Deny("denied by bob: changed my mind".into())
    );
}

#[test]
fn deny_by_eligible_reviewer() {
    let s = settings(r#"{"stages": [{"users": ["bob"]}, {"groups": ["security"], "count": 2}]}"#);
    let r = req("alice", &[]);
    assert_eq!(
        evaluate(
            &s,
            &r,
            &[no("sec", &["security"], Some("not during the freeze"))],
            NOW
        ),
        Outcome::Deny("denied by sec: not during the freeze".into())
    );
    assert_eq!(
        evaluate(&s, &r, &[no("bob", &[], None)], NOW),
        Outcome::Deny("denied by bob".into())
    );
    // A blank comment is left out.
    assert_eq!(
        evaluate(&s, &r, &[no("bob", &[], Some("  "))], NOW),
        Outcome::Deny("denied by bob".into())
    );
    // A deny wins over satisfied stages.
    let all = [
        yes("bob", &[]),
        yes("s1", &["security"]),
        yes("s2", &["security"]),
        no("s3", &["security"], None),
    ];
    assert_eq!(
        evaluate(&s, &r, &all, NOW),
        Outcome::Deny("denied by s3".into())
    );
    assert_eq!(
        evaluate(&s, &r, &all[..3], NOW),
        approved("2 of 2 stages satisfied")
    );
}

#[test]
fn deny_by_ineligible_reviewer_is_ignored() {
    let s = settings(r#"{"stages": [{"users": ["bob"]}]}"#);
    let r = req("alice", &[]);
    let o = evaluate(&s, &r, &[no("mallory", &["dev"], Some("no"))], NOW);
    assert_eq!(progress(&o), vec![Vec::<&str>::new()]);
    assert_eq!(
        evaluate(
            &s,
            &r,
            &[no("mallory", &["dev"], Some("no")), yes("bob", &[])],
            NOW
        ),
        approved("1 of 1 stages satisfied")
    );
}

// ---------------------------------------------------------------------------------------------
// Auto-approve
// ---------------------------------------------------------------------------------------------

const STAGE: &str = r#""stages": [{"users": ["bob"]}]"#;

fn with_rule(rule: &str) -> Settings {
    settings(&format!(r#"{{{STAGE}, "auto_approve": [{rule}]}}"#))
}

fn is_auto(o: &Outcome, name: &str) -> bool {
    *o == approved(&format!("auto-approved by rule '{name}'"))
}

#[test]
fn auto_approve_requester_groups() {
    let s = with_rule(r#"{"name": "sre", "requester_groups": ["sre", "oncall"]}"#);
    assert!(is_auto(
        &evaluate(&s, &req("alice", &["dev", "oncall"]), &[], NOW),
        "sre"
    ));
    assert!(matches!(
        evaluate(&s, &req("alice", &["dev"]), &[], NOW),
        Outcome::Pending(_)
    ));
    assert!(matches!(
        evaluate(&s, &req("alice", &[]), &[], NOW),
        Outcome::Pending(_)
    ));
}

#[test]
fn auto_approve_rule_without_conditions_matches_everything() {
    let s = with_rule("{}");
    assert!(is_auto(
        &evaluate(&s, &req("alice", &[]), &[], NOW),
        "rule 0"
    ));
    let mut action = req("alice", &[]);
    action.duration_seconds = None;
    assert!(is_auto(&evaluate(&s, &action, &[], NOW), "rule 0"));
}

#[test]
fn auto_approve_first_matching_rule_wins_and_default_names() {
    let s = settings(
        r#"{"auto_approve": [
            {"requester_groups": ["nobody"]},
            {"requester_groups": ["sre"]},
            {"name": "later", "requester_groups": ["sre"]}
        ]}"#,
    );
    assert!(is_auto(
        &evaluate(&s, &req("alice", &["sre"]), &[], NOW),
        "rule 1"
    ));
}

#[test]
fn auto_approve_is_checked_before_reviews() {
    let s = with_rule(r#"{"requester_groups": ["sre"]}"#);
    let o = evaluate(
        &s,
        &req("alice", &["sre"]),
        &[no("bob", &[], Some("no"))],
        NOW,
    );
    assert!(is_auto(&o, "rule 0"), "{o:?}");
}

#[test]
fn auto_approve_max_duration() {
    let s = with_rule(r#"{"max_duration": "1h"}"#);
    let mut r = req("alice", &[]);
    r.duration_seconds = Some(3600);
    assert!(
        is_auto(&evaluate(&s, &r, &[], NOW), "rule 0"),
        "equal passes"
    );
    r.duration_seconds = Some(3601);
    assert!(
        matches!(evaluate(&s, &r, &[], NOW), Outcome::Pending(_)),
        "one second more fails"
    );
    r.duration_seconds = Some(1);
    assert!(is_auto(&evaluate(&s, &r, &[], NOW), "rule 0"));
    r.duration_seconds = None;
    assert!(
        matches!(evaluate(&s, &r, &[], NOW), Outcome::Pending(_)),
        "actions never match"
    );

    let s = with_rule(r#"{"max_duration": 90}"#);
    r.duration_seconds = Some(90);
    assert!(is_auto(&evaluate(&s, &r, &[], NOW), "rule 0"));
    r.duration_seconds = Some(91);
    assert!(!is_auto(&evaluate(&s, &r, &[], NOW), "rule 0"));
}

const PARIS_OFFICE: &str = r#"{"name": "office", "window": {"time_zone": "Europe/Paris",
    "days": ["mon", "tue", "wed", "thu", "fri"], "from": "09:00", "to": "18:00"}}"#;

#[test]
fn auto_approve_window_inside_and_boundaries() {
    let s = with_rule(PARIS_OFFICE);
    let r = req("alice", &[]);
    for t in [
        "2024-06-03T09:00:00+02:00[Europe/Paris]", // Monday, from is inclusive
        "2024-06-03T12:34:56+02:00[Europe/Paris]",
        "2024-06-07T17:59:59.999+02:00[Europe/Paris]", // Friday
        "2024-01-15T09:30:00+01:00[Europe/Paris]",     // winter time, Monday
    ] {
        assert!(
            is_auto(&evaluate(&s, &r, &[], ms(t)), "office"),
            "{t} should be inside"
        );
    }
}

#[test]
fn auto_approve_window_outside_by_time() {
    let s = with_rule(PARIS_OFFICE);
    let r = req("alice", &[]);
    for t in [
        "2024-06-03T08:59:59.999+02:00[Europe/Paris]",
        "2024-06-03T18:00:00+02:00[Europe/Paris]", // to is exclusive
        "2024-06-03T23:00:00+02:00[Europe/Paris]",
        // 09:30 UTC would be inside if the zone were ignored; in Paris (summer) it is 11:30:
        // instead check 16:30 UTC = 18:30 Paris, outside.
        "2024-06-03T16:30:00+00:00[UTC]",
    ] {
        assert!(
            !is_auto(&evaluate(&s, &r, &[], ms(t)), "office"),
            "{t} should be outside"
        );
    }
}

#[test]
fn auto_approve_window_outside_by_weekday() {
    let s = with_rule(PARIS_OFFICE);
    let r = req("alice", &[]);
    for t in [
        "2024-06-01T10:00:00+02:00[Europe/Paris]",
        "2024-06-02T10:00:00+02:00[Europe/Paris]",
    ] {
        assert!(
            !is_auto(&evaluate(&s, &r, &[], ms(t)), "office"),
            "{t} is a weekend"
        );
    }
}

#[test]
fn auto_approve_window_uses_local_weekday_and_24_00() {
    let s = with_rule(
        r#"{"name": "friday night", "window": {"time_zone": "Europe/Paris",
            "days": ["Friday"], "from": "20:00", "to": "24:00"}}"#,
    );
    let r = req("alice", &[]);
    let inside = [
        "2024-06-07T23:59:59.999+02:00[Europe/Paris]",
        "2024-06-07T20:00:00+02:00[Europe/Paris]",
    ];
    for t in inside {
        assert!(
            is_auto(&evaluate(&s, &r, &[], ms(t)), "friday night"),
            "{t}"
        );
    }
    // 22:30 UTC on Friday is 00:30 on Saturday in Paris.
    for t in [
        "2024-06-07T22:30:00+00:00[UTC]",
        "2024-06-08T00:00:00+02:00[Europe/Paris]",
    ] {
        assert!(
            !is_auto(&evaluate(&s, &r, &[], ms(t)), "friday night"),
            "{t}"
        );
    }
}

#[test]
fn auto_approve_window_follows_dst() {
    // New York switches from EST (-05:00) to EDT (-04:00) on 2024-03-10 at 02:00.
    let s = with_rule(
        r#"{"window": {"time_zone": "America/New_York",
            "days": ["sat", "sun"], "from": "09:00", "to": "10:00"}}"#,
    );
    let r = req("alice", &[]);
    let at = |t: &str| is_auto(&evaluate(&s, &r, &[], ms(t)), "rule 0");
    // Saturday, EST: 09:30 local is 14:30 UTC.
    assert!(at("2024-03-09T14:30:00+00:00[UTC]"));
    assert!(!at("2024-03-09T13:30:00+00:00[UTC]"));
    // Sunday, EDT: 09:30 local is 13:30 UTC; 14:30 UTC is 10:30 local.
    assert!(at("2024-03-10T13:30:00+00:00[UTC]"));
    assert!(!at("2024-03-10T14:30:00+00:00[UTC]"));
    // And back to EST on 2024-11-03.
    assert!(at("2024-11-03T14:30:00+00:00[UTC]"));
    assert!(!at("2024-11-03T13:30:00+00:00[UTC]"));
}

#[test]
fn auto_approve_conditions_combined() {
    let s = with_rule(
        r#"{"name": "sre on hours", "requester_groups": ["sre"], "max_duration": "1h",
            "window": {"time_zone": "Europe/Paris", "days": ["mon","tue","wed","thu","fri"],
                       "from": "09:00", "to": "18:00"}}"#,
    );
    let on_hours = ms("2024-06-04T10:00:00+02:00[Europe/Paris]");
    let off_hours = ms("2024-06-04T20:00:00+02:00[Europe/Paris]");
    let sre = req("alice", &["sre"]);
    assert!(is_auto(&evaluate(&s, &sre, &[], on_hours), "sre on hours"));
    assert!(!is_auto(
        &evaluate(&s, &sre, &[], off_hours),
        "sre on hours"
    ));
    assert!(!is_auto(
        &evaluate(&s, &req("alice", &["dev"]), &[], on_hours),
        "sre on hours"
    ));
    let mut long = sre.clone();
    long.duration_seconds = Some(7200);
    assert!(!is_auto(
        &evaluate(&s, &long, &[], on_hours),
        "sre on hours"
    ));
    let mut action = sre.clone();
    action.duration_seconds = None;
    assert!(!is_auto(
        &evaluate(&s, &action, &[], on_hours),
        "sre on hours"
    ));
}

#[test]
fn no_stage_and_no_matching_rule_denies() {
    let s = settings(r#"{"auto_approve": [{"requester_groups": ["sre"]}]}"#);
    assert_eq!(
        evaluate(&s, &req("alice", &["dev"]), &[yes("bob", &[])], NOW),
        Outcome::Deny("no approval stage matches and no auto-approve rule applies".into())
    );
    let s = settings(r#"{"stages": [], "auto_approve": [{"requester_groups": ["sre"]}]}"#);
    assert_eq!(
        evaluate(&s, &req("alice", &[]), &[], NOW),
        Outcome::Deny(NO_STAGE_DENIAL.into())
    );
    assert!(is_auto(
        &evaluate(&s, &req("alice", &["sre"]), &[], NOW),
        "rule 0"
    ));
}

// ---------------------------------------------------------------------------------------------
// Break-glass
// ---------------------------------------------------------------------------------------------

fn glass(enabled: bool, min: Option<u32>) -> Settings {
    let min = min
        .map(|m| format!(r#", "min_justification_chars": {m}"#))
        .unwrap_or_default();
    settings(&format!(
        r#"{{"stages": [{{"users": ["bob"]}}], "break_glass": {{"enabled": {enabled}{min}}}}}"#
    ))
}

fn justified(text: &str) -> Request {
    Request {
        justification: text.into(),
        ..req("alice", &[])
    }
}

const LONG: &str = "prod database is down, INC-1234";

#[test]
fn break_glass_with_long_justification_approves() {
    let s = glass(true, None);
    let r = justified(LONG);
    assert_eq!(
        evaluate(&s, &r, &[yes("alice", &[])], NOW),
        Outcome::Approve {
            reason: "break-glass: self-approved by alice".into(),
            break_glass: true
        }
    );
    assert!(!break_glass_too_short(&s, &r, &[yes("alice", &[])]));
    // Exactly the minimum, counted in characters of the trimmed text.
    let s = glass(true, Some(5));
    let r = justified("  ééééé  ");
    assert!(matches!(
        evaluate(&s, &r, &[yes("alice", &[])], NOW),
        Outcome::Approve {
            break_glass: true,
            ..
        }
    ));
}

#[test]
fn break_glass_with_short_justification_is_ignored() {
    let s = glass(true, None);
    let r = justified("   because I can    "); // 13 characters once trimmed
    let reviews = [yes("alice", &[])];
    assert_eq!(
        progress(&evaluate(&s, &r, &reviews, NOW)),
        vec![Vec::<&str>::new()]
    );
    assert!(break_glass_too_short(&s, &r, &reviews));
    let s = glass(true, Some(14));
    let r = justified("abcdefghijklm"); // 13
    assert!(matches!(
        evaluate(&s, &r, &reviews, NOW),
        Outcome::Pending(_)
    ));
    // Others can still approve it normally.
    assert_eq!(
        evaluate(&s, &r, &[yes("alice", &[]), yes("bob", &[])], NOW),
        approved("1 of 1 stages satisfied")
    );
}

#[test]
fn break_glass_disabled_ignores_self_approval() {
    for s in [
        glass(false, None),
        settings(r#"{"stages": [{"users": ["bob"]}]}"#),
    ] {
        let r = justified(LONG);
        assert!(matches!(
            evaluate(&s, &r, &[yes("alice", &[])], NOW),
            Outcome::Pending(_)
        ));
        assert!(!break_glass_too_short(&s, &r, &[yes("alice", &[])]));
    }
}

#[test]
fn break_glass_needs_latest_self_review_to_approve_and_loses_to_deny() {
    let s = glass(true, None);
    let r = justified(LONG);
    let o = evaluate(&s, &r, &[yes("alice", &[]), no("alice", &[], None)], NOW);
    assert!(matches!(o, Outcome::Pending(_)), "{o:?}");
    assert_eq!(
        evaluate(
            &s,
            &r,
            &[yes("alice", &[]), no("bob", &[], Some("no"))],
            NOW
        ),
        Outcome::Deny("denied by bob: no".into())
    );
    // Someone else's approval is not break-glass.
    assert_eq!(
        evaluate(&s, &r, &[yes("alice", &[]), yes("bob", &[])], NOW),
        approved("1 of 1 stages satisfied")
    );
}

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

#[test]
fn full_example_parses() {
    let s = settings(
        r#"{
          "stages": [
            { "name": "team lead", "users": ["bob"], "groups": ["leads", "managers"], "count": 1 },
            { "name": "security", "groups": ["security"], "count": 2 }
          ],
          "auto_approve": [
            { "name": "sre on hours", "requester_groups": ["sre"],
              "window": { "time_zone": "Europe/Paris", "days": ["mon","tue","wed","thu","fri"], "from": "09:00", "to": "18:00" },
              "max_duration": "1h" }
          ],
          "break_glass": { "enabled": true, "min_justification_chars": 20 }
        }"#,
    );
    assert_eq!(s.stages.len(), 2);
    assert_eq!(s.stages[1].count, 2);
    let rule = &s.auto_approve[0];
    assert_eq!(rule.max_duration_seconds, Some(3600));
    let w = rule.window.as_ref().unwrap();
    assert_eq!((w.days, w.from_minute, w.to_minute), (0b0011111, 540, 1080));
    assert_eq!(w.time_zone, "Europe/Paris");
    assert_eq!(
        s.break_glass,
        BreakGlass {
            enabled: true,
            min_justification_chars: 20
        }
    );
}

#[test]
fn defaults() {
    let s = settings(r#"{"stages": [{"users": ["a"]}, {"groups": ["g"]}], "break_glass": {}}"#);
    assert_eq!(s.stages[0].name, "stage 1");
    assert_eq!(s.stages[1].name, "stage 2");
    assert_eq!(s.stages[1].count, 1);
    assert_eq!(
        s.break_glass,
        BreakGlass {
            enabled: false,
            min_justification_chars: 20
        }
    );
    assert!(s.auto_approve.is_empty());
    assert!(
        validate(r#"{"auto_approve": [{}]}"#).is_ok(),
        "stages may be left out with a rule"
    );
}

#[test]
fn stages_or_rules_required() {
    for json in [
        "{}",
        r#"{"stages": []}"#,
        r#"{"stages": [], "auto_approve": []}"#,
        r#"{"stages": null}"#,
    ] {
        let errs = errors(json);
        assert_eq!(errs.len(), 1, "{json}: {errs:?}");
        assert_error(
            &errs,
            "stages",
            &["at least one stage or one auto_approve rule is required"],
        );
    }
}

#[test]
fn stage_errors() {
    let errs = errors(
        r#"{"stages": [
            {"name": "", "users": ["a"]},
            {"users": [], "groups": []},
            {"users": ["a", ""], "groups": ["g", " "]},
            {"users": ["a"], "count": 0},
            {"users": ["a"], "count": -1},
            {"users": ["a"], "count": 1.5},
            {"users": ["a"], "count": "2"},
            {"users": ["a", "b", "a"], "count": 3},
            {"users": ["a"], "count": 2},
            {"groups": ["g"], "count": 5}
        ]}"#,
    );
    assert_error(&errs, "stages[0].name", &["must not be empty", "stage 1"]);
    assert_error(&errs, "stages[1]", &["no users and no groups"]);
    assert_error(
        &errs,
        "stages[2].users[1]",
        &["must not be an empty string"],
    );
    assert_error(
        &errs,
        "stages[2].groups[1]",
        &["must not be an empty string"],
    );
    assert_error(&errs, "stages[3].count", &["must be at least 1", "0"]);
    assert_error(&errs, "stages[4].count", &["must be at least 1", "-1"]);
    assert_error(&errs, "stages[5].count", &["whole number", "1.5"]);
    assert_error(
        &errs,
        "stages[6].count",
        &["expected a whole number", "string \"2\""],
    );
    assert_error(
        &errs,
        "stages[7].count",
        &["needs 3 approvals but only 2 users are listed and no groups"],
    );
    assert_error(
        &errs,
        "stages[8].count",
        &["needs 2 approvals but only 1 user is listed and no groups"],
    );
    assert_eq!(errs.len(), 10, "{errs:#?}");
}

#[test]
fn rule_errors() {
    let errs = errors(
        r#"{"stages": [{"users": ["a"]}], "auto_approve": [
            {"name": "", "requester_groups": []},
            {"requester_groups": "sre"},
            {"window": {}},
            {"window": {"time_zone": "Europe/Pari", "days": [], "from": "9:00", "to": "25:00"}},
            {"window": {"time_zone": "UTC", "days": ["mon", "Monday", "funday", 3], "from": "24:00", "to": "12:60"}},
            {"window": {"time_zone": "UTC", "days": ["sat"], "from": "18:00", "to": "09:00"}},
            {"window": {"time_zone": "UTC", "days": ["sat"], "from": "10:00", "to": "10:00"}},
            {"window": {"time_zone": 1, "days": "mon", "from": 9, "to": null}},
            {"window": "always"}
        ]}"#,
    );
    assert_error(
        &errs,
        "auto_approve[0].name",
        &["must not be empty", "rule 0"],
    );
    assert_error(
        &errs,
        "auto_approve[0].requester_groups",
        &["at least one group"],
    );
    assert_error(
        &errs,
        "auto_approve[1].requester_groups",
        &["expected an array of strings", "string \"sre\""],
    );
    for field in ["time_zone", "days", "from", "to"] {
        assert_error(
            &errs,
            &format!("auto_approve[2].window.{field}"),
            &["is required"],
        );
    }
    assert_error(
        &errs,
        "auto_approve[3].window.time_zone",
        &["unknown time zone \"Europe/Pari\"", "Europe/Paris"],
    );
    assert_error(&errs, "auto_approve[3].window.days", &["at least one day"]);
    assert_error(
        &errs,
        "auto_approve[3].window.from",
        &["`9:00` is not a time", "HH:MM"],
    );
    assert_error(
        &errs,
        "auto_approve[3].window.to",
        &["`25:00` is not a valid time"],
    );
    assert_error(
        &errs,
        "auto_approve[4].window.days[1]",
        &["repeats monday, already listed"],
    );
    assert_error(
        &errs,
        "auto_approve[4].window.days[2]",
        &["unknown day \"funday\"", "mon, tue"],
    );
    assert_error(
        &errs,
        "auto_approve[4].window.days[3]",
        &["expected a day name", "number 3"],
    );
    assert_error(
        &errs,
        "auto_approve[4].window.from",
        &["`24:00` is only allowed for `to`"],
    );
    assert_error(
        &errs,
        "auto_approve[4].window.to",
        &["`12:60` is not a valid time"],
    );
    assert_error(
        &errs,
        "auto_approve[5].window.to",
        &["must be later than `from` (18:00)", "two rules"],
    );
    assert_error(
        &errs,
        "auto_approve[6].window.to",
        &["must be later than `from` (10:00)"],
    );
    assert_error(
        &errs,
        "auto_approve[7].window.time_zone",
        &["expected a string", "number 1"],
    );
    assert_error(
        &errs,
        "auto_approve[7].window.days",
        &["expected an array of days", "string \"mon\""],
    );
    assert_error(
        &errs,
        "auto_approve[7].window.from",
        &["expected a string", "number 9"],
    );
    assert_error(&errs, "auto_approve[7].window.to", &["is required"]);
    assert_error(
        &errs,
        "auto_approve[8].window",
        &["expected an object", "string \"always\""],
    );
    assert_eq!(errs.len(), 23, "{errs:#?}");
}

#[test]
fn parsing_for_evaluation_skips_only_the_time_zone_check() {
    let json = r#"{"stages": [{"users": ["bob"]}], "auto_approve": [{"window": {"time_zone": "Mars/Olympus",
        "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "from": "00:00", "to": "24:00"}}]}"#;
    assert_error(
        &errors(json),
        "auto_approve[0].window.time_zone",
        &["Mars/Olympus"],
    );
    let s = parse_settings_for_evaluation(json).unwrap();
    // An unknown zone never matches: the request waits for reviews.
    assert!(matches!(
        evaluate(&s, &req("alice", &[]), &[], NOW),
        Outcome::Pending(_)
    ));
    // A known zone is the same either way.
    let ok = json.replace("Mars/Olympus", "Asia/Tokyo");
    assert_eq!(parse_settings_for_evaluation(&ok), parse_settings(&ok));
    assert!(is_auto(
        &evaluate(
            &parse_settings_for_evaluation(&ok).unwrap(),
            &req("alice", &[]),
            &[],
            NOW
        ),
        "rule 0"
    ));
    // Every other error is still reported.
    let bad = r#"{"stages": [{"users": ["bob"], "count": 0}], "auto_approve": [{"window": {"time_zone": "Mars/Olympus",
        "days": ["mon"], "from": "10:00", "to": "09:00"}}]}"#;
    let errs = parse_settings_for_evaluation(bad).unwrap_err();
    assert_error(&errs, "stages[0].count", &["at least 1"]);
    assert_error(&errs, "auto_approve[0].window.to", &["later than `from`"]);
    assert_eq!(errs.len(), 2, "{errs:#?}");
}

#[test]
fn days_accept_full_names_any_case() {
    let s = with_rule(
        r#"{"window": {"time_zone": "UTC", "days": ["MON", "Tuesday", "wednesday", "Thu", "FRIDAY", "sat", "Sun"],
            "from": "00:00", "to": "24:00"}}"#,
    );
    assert_eq!(s.auto_approve[0].window.as_ref().unwrap().days, 0b111_1111);
}

#[test]
fn max_duration_forms() {
    for (text, secs) in [
        ("\"90s\"", 90),
        ("\"30m\"", 1800),
        ("\"1h\"", 3600),
        ("\"2h30m\"", 9000),
        ("\"1d\"", 86_400),
        ("\"1d2h3m4s\"", 93_784),
        ("3600", 3600),
    ] {
        let s = with_rule(&format!(r#"{{"max_duration": {text}}}"#));
        assert_eq!(s.auto_approve[0].max_duration_seconds, Some(secs), "{text}");
    }
    for (text, part) in [
        ("\"\"", "is not a duration"),
        ("\"1x\"", "is not a duration"),
        ("\"h\"", "is not a duration"),
        ("\"90\"", "is not a duration"),
        ("\"30m2h\"", "largest first"),
        ("\"1h1h\"", "largest first"),
        ("\"1 h\"", "is not a duration"),
        ("\"0s\"", "must be longer than zero"),
        ("0", "must be longer than zero"),
        ("-5", "greater than zero, found the number -5"),
        ("1.5", "greater than zero, found the number 1.5"),
        ("true", "found the boolean true"),
        ("\"99999999999999999999d\"", "too long"),
    ] {
        let errs = errors(&format!(
            r#"{{{STAGE}, "auto_approve": [{{"max_duration": {text}}}]}}"#
        ));
        assert_error(&errs, "auto_approve[0].max_duration", &[part]);
        assert_eq!(errs.len(), 1, "{text}: {errs:?}");
    }
}

#[test]
fn break_glass_errors() {
    let errs = errors(&format!(
        r#"{{{STAGE}, "break_glass": {{"enabled": "yes", "min_justification_chars": 0}}}}"#
    ));
    assert_error(
        &errs,
        "break_glass.enabled",
        &["expected a boolean", "string \"yes\""],
    );
    assert_error(
        &errs,
        "break_glass.min_justification_chars",
        &["must be at least 1"],
    );
    assert_eq!(errs.len(), 2);
    let errs = errors(&format!(r#"{{{STAGE}, "break_glass": true}}"#));
    assert_error(
        &errs,
        "break_glass",
        &["expected an object", "boolean true"],
    );
}

#[test]
fn unknown_fields_are_errors_with_their_path() {
    let errs = errors(
        r#"{"stage": [], "stages": [{"users": ["a"], "cout": 2}],
            "auto_approve": [{"requester_group": ["sre"], "window": {"time_zone": "UTC", "days": ["mon"],
                "from": "09:00", "to": "10:00", "tz": "UTC"}}],
            "break_glass": {"enable": true}}"#,
    );
    assert_error(&errs, "stage", &["unknown field `stage`", "`stages`"]);
    assert_error(
        &errs,
        "stages[0].cout",
        &["unknown field `cout`", "`count`"],
    );
    assert_error(
        &errs,
        "auto_approve[0].requester_group",
        &["unknown field", "`requester_groups`"],
    );
    assert_error(
        &errs,
        "auto_approve[0].window.tz",
        &["unknown field `tz`", "`time_zone`"],
    );
    assert_error(
        &errs,
        "break_glass.enable",
        &["unknown field `enable`", "`enabled`"],
    );
    assert_eq!(errs.len(), 5, "{errs:#?}");
}

#[test]
fn wrong_types_name_path_and_expected_type() {
    let errs = errors(r#"{"stages": {"users": ["a"]}, "auto_approve": "none"}"#);
    assert_error(
        &errs,
        "stages",
        &["expected an array of stages", "an object"],
    );
    assert_error(
        &errs,
        "auto_approve",
        &["expected an array of auto-approve rules", "string \"none\""],
    );
    assert_eq!(errs.len(), 2, "{errs:#?}");

    let errs = errors(r#"{"stages": [["bob"], {"users": "bob", "groups": [1], "name": 7}]}"#);
    assert_error(&errs, "stages[0]", &["expected an object", "an array"]);
    assert_error(
        &errs,
        "stages[1].users",
        &["expected an array of strings", "string \"bob\""],
    );
    assert_error(
        &errs,
        "stages[1].groups[0]",
        &["expected a string", "number 1"],
    );
    assert_error(&errs, "stages[1].name", &["expected a string", "number 7"]);
    assert_eq!(errs.len(), 4, "{errs:#?}");

    let errs = errors(r#"["stages"]"#);
    assert_error(&errs, "", &["expected an object", "an array"]);
}

#[test]
fn repeated_keys_and_nulls() {
    let errs = errors(r#"{"stages": [{"users": ["a"], "count": 1, "count": 2}], "stages": []}"#);
    assert_error(&errs, "stages[0].count", &["more than once"]);
    assert_error(&errs, "stages", &["more than once"]);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    // `null` is the same as leaving an optional field out...
    let s = settings(
        r#"{"stages": [{"name": null, "users": ["a"], "groups": null, "count": null}],
        "auto_approve": null, "break_glass": {"enabled": null}}"#,
    );
    assert_eq!(
        s.stages[0],
        Stage {
            name: "stage 1".into(),
            users: vec!["a".into()],
            groups: vec![],
            count: 1
        }
    );
    assert!(!s.break_glass.enabled);
    // ...but not a value in a list, nor a required field, nor the whole document.
    let errs = errors(
        r#"{"stages": [null, {"users": [null]}], "auto_approve": [{"window":
        {"time_zone": null, "days": [null], "from": "09:00", "to": "10:00"}}]}"#,
    );
    assert_error(&errs, "stages[0]", &["expected an object", "found null"]);
    assert_error(
        &errs,
        "stages[1].users[0]",
        &["expected a string, found null"],
    );
    assert_error(&errs, "auto_approve[0].window.time_zone", &["is required"]);
    assert_error(&errs, "auto_approve[0].window.days[0]", &["found null"]);
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert_error(&errors("null"), "", &["expected an object, found null"]);
}

#[test]
fn invalid_json() {
    let errs = errors(r#"{"stages": [}"#);
    assert_eq!(errs.len(), 1);
    assert_error(&errs, "", &["not valid JSON", "line 1"]);
    assert_error(&errors(""), "", &["not valid JSON"]);
    assert_error(
        &errors(r#"{"stages": [{"users": ["a"]}]} x"#),
        "",
        &["not valid JSON", "trailing"],
    );
}

#[test]
fn setting_error_display() {
    let e = SettingError {
        path: "stages[1].count".into(),
        message: "must be at least 1".into(),
    };
    assert_eq!(e.to_string(), "stages[1].count: must be at least 1");
    let e = SettingError {
        path: String::new(),
        message: "bad".into(),
    };
    assert_eq!(e.to_string(), "bad");
}

#[test]
fn parse_duration_directly() {
    assert_eq!(parse_duration("2h30m"), Ok(9000));
    assert_eq!(parse_duration("0s"), Ok(0));
    assert!(parse_duration("2h30").is_err());
    assert!(parse_duration("-1h").is_err());
}
