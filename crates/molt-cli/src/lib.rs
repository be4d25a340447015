//! The `molt` command's library: what `molt demo` does, so the benchmark
//! harness can run the same ping-pong.

#![forbid(unsafe_code)]

pub mod demo;
