//! Test-only abuse guest: `evaluate` panics (a trap, since plugins build with `panic = "abort"`).

wit_bindgen::generate!({ world: "approval", path: "../../../wit" });

use exports::sallyport::plugin::policy::{Decision, EvaluationContext, Guest, SettingError};

struct Panic;

impl Guest for Panic {
    fn validate(_settings: String) -> Result<(), Vec<SettingError>> {
        Ok(())
    }

    fn evaluate(_ctx: EvaluationContext) -> Result<Decision, String> {
        panic!("abuse guest panicked on purpose");
    }
}

export!(Panic);
