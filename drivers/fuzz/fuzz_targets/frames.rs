//! Random and mutated frames into a smoltcp host with a listener and live connections; see
//! `src/harness.rs` for the input format and the invariants.
#![no_main]

#[path = "../src/harness.rs"]
#[allow(dead_code)] // `seeds` is for the seeds binary and the test
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::Harness::new().run_input(data);
});
