//! Bastion identity (in progress).
