//! The nesting scan of an upstream's answer on arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| registry::fuzzing::answer_depth(data));
