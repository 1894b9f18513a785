//! Test-only abuse guest: built against `sallyport:plugin@0.2.0`, an API version the host does
//! not support, so it must be refused at load time.

wit_bindgen::generate!({ world: "approval", path: "wit" });

use exports::sallyport::plugin::policy::{
    Approval, Decision, EvaluationContext, Guest, SettingError,
};

struct FutureApi;

impl Guest for FutureApi {
    fn validate(_settings: String) -> Result<(), Vec<SettingError>> {
        Ok(())
    }

    fn evaluate(_ctx: EvaluationContext) -> Result<Decision, String> {
        Ok(Decision::Approve(Approval {
            reason: "approved by a plugin from the future".to_owned(),
            break_glass: false,
        }))
    }
}

export!(FutureApi);
