//! Test-only abuse guest: reads `/etc/passwd` through `wasi:filesystem`, an import the host must
//! refuse at load time.

wit_bindgen::generate!({ world: "approval", path: "../../../wit" });

use exports::sallyport::plugin::policy::{
    Approval, Decision, EvaluationContext, Guest, SettingError,
};

struct FsReader;

impl Guest for FsReader {
    fn validate(_settings: String) -> Result<(), Vec<SettingError>> {
        Ok(())
    }

    fn evaluate(_ctx: EvaluationContext) -> Result<Decision, String> {
        match std::fs::read_to_string(std::hint::black_box("/etc/passwd")) {
            Ok(text) => Ok(Decision::Approve(Approval {
                reason: format!("read /etc/passwd: {} bytes", text.len()),
                break_glass: false,
            })),
            Err(e) => Err(format!("could not read /etc/passwd: {e}")),
        }
    }
}

export!(FsReader);
