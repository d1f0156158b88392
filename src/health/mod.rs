//! health (in progress)
