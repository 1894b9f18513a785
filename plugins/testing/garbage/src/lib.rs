//! Test-only abuse guest: answers malformed decisions chosen by its settings,
//! `{"mode": "empty-pending" | "zero-needed" | "no-one" | "huge-reason" | "err"}`.

wit_bindgen::generate!({ world: "approval", path: "../../../wit" });

use exports::sallyport::plugin::policy::{
    Approval, Decision, EvaluationContext, Guest, Requirement, SettingError,
};
use std::hint::black_box;

struct Garbage;

fn requirement(users: Vec<String>, needed: u32) -> Requirement {
    Requirement {
        name: "garbage".to_owned(),
        users,
        groups: Vec::new(),
        needed,
        approved_by: Vec::new(),
    }
}

impl Guest for Garbage {
    fn validate(_settings: String) -> Result<(), Vec<SettingError>> {
        Ok(())
    }

    fn evaluate(ctx: EvaluationContext) -> Result<Decision, String> {
        let settings: serde_json::Value = serde_json::from_str(&ctx.settings).unwrap_or_default();
        let mode = settings
            .get("mode")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        match mode {
            "empty-pending" => Ok(Decision::Pending(Vec::new())),
            "zero-needed" => Ok(Decision::Pending(vec![requirement(
                vec!["alice".to_owned()],
                0,
            )])),
            "no-one" => Ok(Decision::Pending(vec![requirement(Vec::new(), 1)])),
            "huge-reason" => Ok(Decision::Approve(Approval {
                reason: black_box("x".repeat(2 * 1024 * 1024)),
                break_glass: false,
            })),
            "err" => Err("garbage on purpose".to_owned()),
            other => Err(format!("unknown garbage mode `{other}`")),
        }
    }
}

export!(Garbage);
