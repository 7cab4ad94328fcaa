//! What a model may be called: a plain directory name under `models_dir`.
//! Its own module so that the settings ([`crate::config`]) and the model
//! store ([`crate::models`]) both check names without importing each other.

use crate::error::{IndexError, Result};

/// Refuses names that are not a plain directory name.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(IndexError::InvalidRequest(format!(
            "model name `{name}` must be 1 to 128 letters, digits, '-', '_' or '.' (not starting with '.')"
        )))
    }
}
