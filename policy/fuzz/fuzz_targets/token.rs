//! Bearer-token and claims parsing on arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| policy::fuzzing::token(data));
