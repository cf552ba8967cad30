//! Grant patterns and tool names: a grant reaches a tool only on byte-for-byte equality.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| policy::fuzzing::tool_name(data));
