//! `tandem-bench`: scores runs against relevance judgments (with `tandem-eval`), generates synthetic
//! corpora, and (in later work) drives load and quality benchmarks. The command line is defined
//! in [`cli`] so tests run the same code as the binary.

#![warn(missing_docs)]

pub mod cli;
pub mod encoders;
pub mod filter;
pub mod first_stage;
pub mod fusion;
pub mod ingest;
pub mod load;
pub mod plot;
pub mod rerank;
pub mod sweep;
pub mod token_gather;
pub mod workload;
