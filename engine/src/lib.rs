//! tandem's engine: a learned-sparse first stage over an inverted index picks candidates, and a
//! multivector reranker scores them with MaxSim over memory-mapped token vectors.
//!
//! - [`build`] turns documents (JSONL), token vectors and lengths (`.npy`) into an index
//!   directory in the [`format`] of this crate.
//! - [`Index`] opens and validates an index (one [`Segment`] or a list of them);
//!   [`Index::search`] runs the two-stage [`pipeline`].
//! - No async runtime or RPC code lives here; the server and the CLIs are thin layers over it.
//! - Modules are layered without cycles (ARCHITECTURE.md, "Engine modules"; checked by
//!   `tests/layering.rs`): shared vocabulary such as [`Admit`], [`params`] and [`expr`] sits in
//!   leaf modules, the on-disk [`format`](mod@format) imports no query-time code.

#![warn(missing_docs)]

pub mod admit;
pub mod approx;
pub mod attributes;
pub mod build;
pub mod compact;
pub mod doc_tokens;
#[cfg(feature = "encoders")]
pub mod encoders;
pub mod error;
pub mod explain;
pub mod expr;
pub mod filter;
pub mod format;
pub mod fusion;
pub mod index;
pub mod kernels;
pub mod live;
pub mod maxsim;
pub mod segment;
// Memory maps, `madvise`, `mincore` and cache-line prefetches: with `priority`, the engine's only
// `unsafe` outside the SIMD kernels, each block with its `// SAFETY:` argument.
#[allow(unsafe_code)]
mod mmap;
pub mod params;
pub mod pipeline;
pub mod pq;
// A thread's CPU priority: one system call, with its `// SAFETY:` argument.
#[allow(unsafe_code)]
pub mod priority;
pub mod sparse;
pub mod tokens;
pub mod tombstones;
pub mod topk;
pub mod weight_table;

pub use admit::Admit;
pub use error::{Error, Result};
pub use filter::Filter;
pub use fusion::{Fusion, FusionMethod};
pub use index::Index;
pub use pipeline::{
    Hit, Limits, Query, QueryVectors, SearchOutput, SearchParams, SearchStats, Segments,
};
pub use segment::{DeleteOutcome, Segment, Verify};
