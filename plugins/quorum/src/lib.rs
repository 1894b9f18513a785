//! The built-in `quorum` approval plugin: n-of-m approval stages, auto-approve rules and
//! break-glass.
//!
//! All the logic is in [`policy`], which is pure and uses its own types; this file only adapts the
//! WIT interface (`sallyport:plugin/policy`) to it, and only when compiled to WebAssembly, so the
//! policy's tests run natively.

pub mod policy;

#[cfg(target_arch = "wasm32")]
mod bump;

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOC: bump::Bump = bump::Bump::new();

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ world: "approval", path: "../../wit" });

    use crate::policy;
    use exports::sallyport::plugin::policy::{
        Approval, Decision, EvaluationContext, Guest, Requirement,
    };
    use sallyport::plugin::log::{Level, log};
    use sallyport::plugin::types::{Principal, Review, SettingError, Subject, Verdict};

    struct Quorum;

    fn principal(p: Principal) -> policy::Principal {
        policy::Principal {
            id: p.id,
            groups: p.groups,
        }
    }

    fn setting_errors(errors: Vec<policy::SettingError>) -> Vec<SettingError> {
        errors
            .into_iter()
            .map(|e| SettingError {
                path: e.path,
                message: e.message,
            })
            .collect()
    }

    impl Guest for Quorum {
        fn validate(settings: String) -> Result<(), Vec<SettingError>> {
            policy::validate(&settings).map_err(setting_errors)
        }

        fn evaluate(ctx: EvaluationContext) -> Result<Decision, String> {
            // Time zone names were checked by `validate`; skipping that here avoids loading time
            // zone data unless a window is actually checked.
            let settings =
                policy::parse_settings_for_evaluation(&ctx.settings).map_err(|errors| {
                    let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    format!("invalid quorum settings: {}", list.join("; "))
                })?;
            let req = match ctx.subject {
                Subject::Access(a) => policy::Request {
                    requester: principal(a.requester),
                    duration_seconds: Some(a.duration_seconds),
                    justification: a.justification,
                },
                Subject::Action(a) => policy::Request {
                    requester: principal(a.requester),
                    duration_seconds: None,
                    justification: a.justification,
                },
            };
            let reviews: Vec<policy::Review> = ctx
                .reviews
                .into_iter()
                .map(|r: Review| policy::Review {
                    reviewer: principal(r.reviewer),
                    approve: matches!(r.verdict, Verdict::Approve),
                    comment: r.comment,
                })
                .collect();

            Ok(match policy::evaluate(&settings, &req, &reviews, ctx.now) {
                policy::Outcome::Approve {
                    reason,
                    break_glass,
                } => Decision::Approve(Approval {
                    reason,
                    break_glass,
                }),
                policy::Outcome::Deny(reason) => Decision::Deny(reason),
                policy::Outcome::Pending(requirements) => {
                    if policy::break_glass_too_short(&settings, &req, &reviews) {
                        log(
                            Level::Warn,
                            &format!(
                                "break-glass self-approval by {} ignored: the justification has \
                                 fewer than {} characters",
                                req.requester.id, settings.break_glass.min_justification_chars
                            ),
                        );
                    }
                    Decision::Pending(
                        requirements
                            .into_iter()
                            .map(|r| Requirement {
                                name: r.name,
                                users: r.users,
                                groups: r.groups,
                                needed: r.needed,
                                approved_by: r.approved_by,
                            })
                            .collect(),
                    )
                }
            })
        }
    }

    export!(Quorum);
}
