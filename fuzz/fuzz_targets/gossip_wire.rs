//! Fuzz target: see `tests/support/fuzz_checks.rs` for the property.
#![no_main]

#[path = "../../tests/support/fuzz_checks.rs"]
mod fuzz_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::gossip_wire(data));
