//! Secret references and artifact digests as written in config.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| registry::fuzzing::reference(data));
