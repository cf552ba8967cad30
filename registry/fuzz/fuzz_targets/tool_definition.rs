//! A tool definition from an upstream (untrusted JSON): its pin and the hidden-character scan.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| registry::fuzzing::tool_definition(data));
