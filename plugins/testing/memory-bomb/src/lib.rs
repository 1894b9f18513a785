//! Test-only abuse guest: `evaluate` allocates 1 MiB blocks, touching every page, until
//! allocation fails (which aborts) or 4 GiB are held, so the host's memory limit must stop it.

wit_bindgen::generate!({ world: "approval", path: "../../../wit" });

use exports::sallyport::plugin::policy::{Decision, EvaluationContext, Guest, SettingError};
use std::hint::black_box;

const MIB: usize = 1 << 20;
const PAGE: usize = 64 * 1024;

struct MemoryBomb;

impl Guest for MemoryBomb {
    fn validate(_settings: String) -> Result<(), Vec<SettingError>> {
        Ok(())
    }

    fn evaluate(_ctx: EvaluationContext) -> Result<Decision, String> {
        let mut held: Vec<Vec<u8>> = Vec::new();
        for i in 0..4096usize {
            let mut block = vec![0u8; MIB];
            // Write to every wasm page so the memory is really committed.
            for offset in (0..MIB).step_by(PAGE) {
                block[offset] = black_box(i as u8 | 1);
            }
            held.push(black_box(block));
        }
        black_box(&held);
        Err(format!("still alive after allocating {} MiB", held.len()))
    }
}

export!(MemoryBomb);
