//! A change on its way into the daemon.
