//! vrrp (in progress)
pub mod packet;
