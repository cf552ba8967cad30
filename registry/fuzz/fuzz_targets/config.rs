//! The config loader on arbitrary text.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| registry::fuzzing::config(data));
