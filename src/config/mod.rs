//! Configuration: raw serde layer ([`raw`]) → [`validate`] → typed [`types::Config`].
//!
//! Every problem in a file is reported at once, each with file:line:col and a hint.

pub mod duration;
pub mod error;
mod etcd;
mod log_validate;
pub mod quick;
mod raw;
pub mod rules;
pub mod types;
pub mod validate;

use std::path::Path;

pub use error::{ConfigError, ConfigErrors};
pub use log_validate::parse_size;
pub use types::Config;

/// Parse and validate configuration text; `file` labels error positions.
pub fn parse_str(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    validate::parse_str(text, file).map_err(ConfigErrors)
}

/// Read, parse and validate a configuration file.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let label = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: label.clone(),
            line: 0,
            col: 0,
            message: format!("cannot read the file: {e}"),
            hint: None,
        }])
    })?;
    let mut cfg = parse_str(&text, &label).map_err(|mut errors| {
        // An HAProxy or keepalived file fails as TOML on its first line: say what to do.
        if let Some(hint) = crate::import::foreign_hint(&text, &label) {
            if let Some(first) = errors.0.first_mut() {
                first.hint = Some(hint);
            }
        }
        errors
    })?;
    cfg.source = Some(path.to_path_buf());
    Ok(cfg)
}
