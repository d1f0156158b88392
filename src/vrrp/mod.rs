//! vrrp (in progress)
