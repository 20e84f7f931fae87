//! tandem's input formats, shared by the index builder, the clients and the benchmarks:
//!
//! - [`npy`]: `.npy` arrays (token vectors, lengths, projections), read with positioned reads;
//! - [`jsonl`]: Seismic-style JSONL records (documents and queries);
//! - [`synth`] (feature `synth`): the deterministic synthetic corpus generator;
//! - [`resample`] (feature `synth`): a corpus of any size resampled from a real encoded one.
//!
//! Nothing here knows the index format; the engine depends on this crate, not the reverse.

#![warn(missing_docs)]

pub mod error;
pub mod jsonl;
pub mod npy;
#[cfg(feature = "synth")]
pub mod resample;
#[cfg(feature = "synth")]
pub mod synth;

pub use error::{Error, Result};
