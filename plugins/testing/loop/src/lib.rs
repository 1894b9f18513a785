//! Test-only abuse guest: `evaluate` never returns, so the host must interrupt it (fuel/epochs).

wit_bindgen::generate!({ world: "approval", path: "../../../wit" });

use exports::sallyport::plugin::policy::{Decision, EvaluationContext, Guest, SettingError};
use std::hint::black_box;

struct Loop;

impl Guest for Loop {
    fn validate(_settings: String) -> Result<(), Vec<SettingError>> {
        Ok(())
    }

    fn evaluate(_ctx: EvaluationContext) -> Result<Decision, String> {
        // `black_box` makes the counter opaque, so the optimizer cannot delete the loop.
        let mut counter = 0u64;
        loop {
            counter = black_box(counter).wrapping_add(1);
        }
    }
}

export!(Loop);
