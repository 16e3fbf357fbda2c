//! Shared between the XDP program (lb-ebpf) and the controller (lb-userspace).
//!
//! Everything here is `no_std`, `#[repr(C)]`, made of fixed-width integers with
//! explicit padding, and checked for size at compile time: a map value's layout
//! is a contract between two compilers.
#![no_std]

pub mod aux;
pub mod decap;
pub mod hash;
pub mod maps;
pub mod stats;
pub mod trace;
pub mod types;
pub mod vipslot;

pub use types::*;
