//! fulcrum on etcd v3: the client ([`client`], [`pb`]) that discovery
//! (`discovery = { etcd = … }`), `fulcrum register` ([`register`]) and the
//! shared runtime state (`[cluster] store = { etcd = … }`, [`store`]) and the
//! configuration from etcd (`[cluster] config = { etcd = … }`,
//! [`config_source`]) use.
//!
//! Everything here is behind the default-on `etcd` cargo feature; without it
//! the config keys still parse and a source that needs etcd reports that the
//! binary was built without it.

#[cfg(feature = "etcd")]
pub mod client;
#[cfg(feature = "etcd")]
pub mod config_source;
#[cfg(feature = "etcd")]
pub mod pb;
#[cfg(feature = "etcd")]
pub mod register;
#[cfg(feature = "etcd")]
pub mod store;
