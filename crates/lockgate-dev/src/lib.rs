//! Lockgate's development tools as a library, behind the `lockgate-dev` binary: the
//! SIGKILL tortures of the real `lockgate` executable ([`torture`]; the crash tests in
//! the repository's `tests/crash.rs` call it with the executable of their build) and the
//! benchmarks ([`bench`], [`bench_kafka`]). Nothing here is part of the user CLI.

#![deny(missing_docs)]

pub mod bench;
pub mod bench_kafka;
pub mod bench_scale_out;
pub mod torture;
