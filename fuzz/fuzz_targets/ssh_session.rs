//! Fuzz target: see `tests/support/fuzz_ssh_checks.rs` for the property.
#![no_main]

#[path = "../../tests/support/fuzz_ssh_checks.rs"]
mod fuzz_ssh_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_ssh_checks::ssh_session(data));
