//! The admin listener: dashboard at `/`, JSON API under `/api/v1`, Prometheus `/metrics`.
pub mod metrics;
pub mod status;
