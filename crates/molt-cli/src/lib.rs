//! The `molt` command's library: what `molt demo` does, so the benchmark
//! harness can run the same ping-pong, and `molt node` / `molt ping`.

#![forbid(unsafe_code)]

pub mod demo;
pub mod node;
