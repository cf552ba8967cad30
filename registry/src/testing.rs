//! Helpers shared by the registry's unit tests.

use crate::{ConfigError, load_str};

/// The problems a config that must not load reports, rendered as the operator sees them.
pub(crate) fn problems(text: &str) -> Vec<String> {
    match load_str("t.yaml", text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(ConfigError::Invalid(p)) => p.iter().map(|p| p.to_string()).collect(),
        Err(e) => panic!("unexpected error {e}"),
    }
}
