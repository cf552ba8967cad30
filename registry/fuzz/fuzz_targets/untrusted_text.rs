//! Text from callers and upstreams: secret spans, resource URIs in normal form, and the scan for
//! instruction-like text.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| registry::fuzzing::untrusted_text(data));
