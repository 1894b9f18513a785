//! Property tests: random action sequences never break the lifecycle's invariants.

use proptest::prelude::*;
use serde_json::json;

use super::*;

fn principal(id: &str, groups: &[&str]) -> Principal {
    Principal {
        id: id.into(),
        email: None,
        name: None,
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    }
}

/// alice requests; bob leads; carol is security; dave is an admin; eve is nobody.
fn people() -> Vec<(Principal, bool)> {
    vec![
        (principal("alice", &["eng"]), false),
        (principal("bob", &["leads"]), false),
        (principal("carol", &["security"]), false),
        (principal("dave", &[]), true),
        (principal("eve", &["sales"]), false),
    ]
}

/// A reference policy: one approval from `leads` and one from `security`, the requester's own
/// approval never counting; break-glass when the requester approved themselves.
fn policy(req: &Request) -> PolicyOutcome {
    let approvers = |group: &str| -> Vec<String> {
        req.reviews
            .iter()
            .filter(|r| {
                r.verdict == Verdict::Approve
                    && r.reviewer.id != req.requester.id
                    && r.reviewer.groups.iter().any(|g| g == group)
            })
            .map(|r| r.reviewer.id.clone())
            .collect()
    };
    if req
        .reviews
        .iter()
        .any(|r| r.verdict == Verdict::Deny && r.reviewer.id != req.requester.id)
    {
        return PolicyOutcome::Deny {
            reason: "denied".into(),
        };
    }
    let stages = [("lead", "leads"), ("security", "security")];
    let reqs: Vec<Requirement> = stages
        .iter()
        .map(|(name, group)| Requirement {
            name: (*name).into(),
            users: vec![],
            groups: vec![(*group).into()],
            needed: 1,
            approved_by: approvers(group).into_iter().take(1).collect(),
        })
        .collect();
    if reqs.iter().all(Requirement::satisfied) {
        return PolicyOutcome::Approve {
            reason: "2 of 2".into(),
            break_glass: false,
        };
    }
    if req
        .reviews
        .iter()
        .any(|r| r.reviewer.id == req.requester.id && r.verdict == Verdict::Approve)
    {
        return PolicyOutcome::Approve {
            reason: "break-glass".into(),
            break_glass: true,
        };
    }
    PolicyOutcome::Pending { requirements: reqs }
}

#[derive(Debug, Clone)]
enum Step {
    Wait(i64),
    Review(usize, bool),
    Cancel(usize),
    TimeOut,
    StartProvision,
    Provisioned(i64),
    ProvisionFailed,
    Expire,
    Revoke(usize),
    End(usize),
    RevokeOk,
    RevokeErr,
    PluginError,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1i64..120_000).prop_map(Step::Wait),
        (0usize..5, any::<bool>()).prop_map(|(p, a)| Step::Review(p, a)),
        (0usize..5).prop_map(Step::Cancel),
        Just(Step::TimeOut),
        Just(Step::StartProvision),
        (0i64..120_000).prop_map(Step::Provisioned),
        Just(Step::ProvisionFailed),
        Just(Step::Expire),
        (0usize..5).prop_map(Step::Revoke),
        (0usize..5).prop_map(Step::End),
        Just(Step::RevokeOk),
        Just(Step::RevokeErr),
        Just(Step::PluginError),
    ]
}

fn plugin() -> PluginRef {
    PluginRef {
        name: "test".into(),
        version: "0".into(),
        sha256: "00".into(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn lifecycle_invariants(break_glass in any::<bool>(), steps in proptest::collection::vec(step(), 1..40)) {
        let people = people();
        let rules = EntitlementRules {
            id: "e".into(),
            max_duration_secs: 3600,
            default_duration_secs: 60,
            requester_groups: vec!["eng".into()],
            requester_users: vec![],
            justification_pattern: None,
            ticket_required: false,
            pending_ttl_secs: 600,
            break_glass,
        };
        let mut now: Millis = 1_000_000;
        let created = Request::create(
            "r".into(),
            NewRequest {
                requester: people[0].0.clone(),
                duration_secs: Some(60),
                justification: "because".into(),
                ticket: None,
                channel: Channel::Web,
            },
            &rules,
            now,
        ).expect("create");
        let first = created.request.apply(
            Action::Evaluated { outcome: policy(&created.request), plugin: Some(plugin()) },
            now,
        ).expect("first evaluation");
        let mut req = first.request;
        let mut events: Vec<Event> = created.events;
        events.extend(first.events);
        let mut ever_final = req.state.is_final();
        let mut ever_revoked = false;

        for s in steps {
            let actor = |i: usize| Actor { principal: people[i].0.clone(), admin: people[i].1, channel: Channel::Api };
            let action = match s {
                Step::Wait(ms) => { now += ms; continue; }
                Step::Review(i, approve) => Action::Review(Review {
                    reviewer: people[i].0.clone(),
                    verdict: if approve { Verdict::Approve } else { Verdict::Deny },
                    comment: None,
                    channel: Channel::Api,
                    at: now,
                }),
                Step::Cancel(i) => Action::Cancel(actor(i)),
                Step::TimeOut => Action::TimeOut,
                Step::StartProvision => Action::StartProvision,
                Step::Provisioned(back) => Action::Provisioned { activated_at: now - back, handle: json!({}), summary: "ok".into(), plugin: plugin() },
                Step::ProvisionFailed => Action::ProvisionFailed { error: "boom".into() },
                Step::Expire => Action::Expire,
                Step::Revoke(i) => Action::Revoke { by: actor(i), reason: "stop".into() },
                Step::End(i) => Action::End(actor(i)),
                Step::RevokeOk => Action::RevokeSucceeded,
                Step::RevokeErr => Action::RevokeFailed { error: "later".into() },
                Step::PluginError => Action::Evaluated {
                    outcome: PolicyOutcome::Error { code: "plugin_trap".into(), message: "x".into() },
                    plugin: Some(plugin()),
                },
            };
            let reviewed = matches!(action, Action::Review(_));
            let before = req.clone();
            let Ok(mut t) = req.apply(action, now) else {
                continue;
            };
            // The service re-evaluates the policy after every review, in the same commit.
            if reviewed {
                let outcome = policy(&t.request);
                let t2 = t.request.apply(Action::Evaluated { outcome, plugin: Some(plugin()) }, now)
                    .expect("a pending request can always be evaluated");
                t.events.extend(t2.events);
                t.jobs.extend(t2.jobs);
                t.request = t2.request;
            }
            req = t.request;
            events.extend(t.events);

            // Never active without approval.
            if matches!(req.state, State::Approved | State::Provisioning | State::Active) {
                prop_assert!(events.iter().any(|e| e.action == "request.approved"), "{:?}", req.state);
                prop_assert!(req.decided_by.is_some());
            }
            // Never active after a final state or a revocation; never active past expires_at.
            if req.state == State::Active {
                prop_assert!(!ever_final && !ever_revoked);
                prop_assert!(req.is_active_at(now), "active at {now} but grant {:?}", req.grant);
            }
            // Time-driven moves happen only when due.
            if req.state == State::TimedOut && before.state == State::Pending {
                prop_assert!(now >= req.pending_until);
            }
            if req.state == State::Expired && before.state == State::Active {
                prop_assert!(req.grant.as_ref().is_some_and(|g| now >= g.expires_at));
            }
            // A final state is final.
            if before.state.is_final() {
                prop_assert_eq!(before.state, req.state);
            }
            ever_final |= req.state.is_final();
            ever_revoked |= req.state == State::Revoked;
            // The requester's own review is only ever recorded with break-glass enabled.
            if !break_glass {
                prop_assert!(req.reviews.iter().all(|r| r.reviewer.id != req.requester.id));
            }
            // Break-glass approvals only where enabled.
            if req.break_glass {
                prop_assert!(break_glass);
            }
            // Exactly one grant per approved request: activated at most once, only after approval.
            let activations = events.iter().filter(|e| e.action == "grant.activated" || e.action == "grant.provisioned_after_revoke").count();
            prop_assert!(activations <= 1, "{activations} activations");
            if activations == 1 {
                prop_assert!(events.iter().any(|e| e.action == "request.approved"));
                prop_assert!(req.grant.is_some());
            }
            // Eligibility: every non-requester reviewer was admitted by the requirements.
            for r in &req.reviews {
                prop_assert!(r.reviewer.id == req.requester.id
                    || ["leads", "security"].iter().any(|g| r.reviewer.groups.iter().any(|x| x == g)));
            }
        }
    }
}
