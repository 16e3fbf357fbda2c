//! Stub: the programs are in the `lb-ebpf` binary (src/main.rs); see Cargo.toml.
#![no_std]
