//! Configuration: raw serde layer → `validate()` → typed [`types::Config`].
pub mod types;
