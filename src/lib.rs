//! fulcrum: a high-availability load balancer in one daemon.
//!
//! Data flows config → runtime snapshot → listeners → balancer → server; facts
//! (health, connection counts, VRRP state) flow back into per-server shared state.
//! See README.md, "Architecture".

pub mod admin;
pub mod balance;
pub mod cluster;
pub mod config;
pub mod ctl;
pub mod demo;
pub mod discovery;
pub mod health;
pub mod import;
pub mod lab;
pub mod log;
pub mod proxy;
pub mod routing;
pub mod runtime;
pub mod supervisor;
pub mod systemd;
pub mod tls;
pub mod upgrade;
pub mod vrrp;
