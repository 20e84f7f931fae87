//! The product-quantization (PQ) codec for stored token vectors (`--codec pq`).
//!
//! # Codes, scales and codebook
//!
//! The `dim` dimensions are split into `M = min(32, dim)` contiguous subspaces of nearly equal
//! width ([`codebook::split`]: 4 dimensions each at dim 128). Each subspace has [`CENTROIDS`] =
//! 256 centroids, trained at build time by k-means ([`kmeans`]: k-means++ seeding and Lloyd
//! iterations on an evenly spaced sample of at most 65,536 token vectors, seeded, so a build is
//! reproducible, on any CPU). A token is stored as `M` one-byte *codes*, the index of the
//! nearest centroid in each subspace, and one f16 *scale* (see below): `M + 2` bytes per token
//! (34 at dim 128), documents' tokens in order, unpadded. The codebook (`256 · dim` f32 values,
//! 128 KiB at dim 128) and the subspace bounds are stored once per index and not counted in the
//! bytes per token.
//!
//! The scale is the least-squares factor `(x · x̂) / (x̂ · x̂)` between the token `x` and its
//! decoded vector `x̂`. A centroid is a mean, so decoded vectors come out shorter than the
//! tokens, by an amount that varies from token to token; MaxSim takes each query token's
//! *largest* dot product, where that loss along the token's own direction matters most. On the
//! scifact eval set the scale raised two-stage nDCG@10 at κ = 50 by 0.0017 on average over eight
//! training seeds (and the top-10 agreement with f16 reranking from 0.935 to 0.945), for two
//! bytes per token.
//!
//! # Scoring
//!
//! [`maxsim`] decodes a candidate into the packed int8 layout of [`crate::kernels::int8`] (one
//! lookup per value in a per-dimension table of the centroid values rounded to 8 bits, in a
//! reusable per-thread buffer; the token scales become the layout's scales) and runs the int8
//! MaxSim kernel on it, with the query multiplied by each dimension's table step. Rounding the
//! centroid values to 255 levels of their dimension's largest magnitude adds at most
//! `max |c_j| / 254` per value, far below the quantization error of the codes. The alternative,
//! asymmetric distance computation (per query a table of `q · centroid` for every query token,
//! subspace and centroid, then `M` lookups per query token and document token), measured several
//! times slower on 32 query tokens × 80 or 160 document tokens at dim 128 (see the README).

pub mod codebook;
pub mod kmeans;

#[cfg(test)]
mod tests;

pub use codebook::{Codebook, CENTROIDS};

use crate::kernels::{self, KernelKind, TokenMax};
use half::f16;
use std::cell::RefCell;

/// How an index build trains its codebook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainParams {
    /// Subspaces (each a one-byte code per token); at most `dim` are used.
    pub subspaces: usize,
    /// Most token vectors the k-means sees: evenly spaced over all tokens.
    pub sample: usize,
    /// Most Lloyd iterations after the k-means++ seeding.
    pub iterations: usize,
    /// Seed of the k-means++ seeding (subspace `s` uses `seed + s`).
    pub seed: u64,
}

impl TrainParams {
    /// What `--codec pq` builds use: 32 subspaces, at most 65,536 sampled tokens, at most 15
    /// iterations, seed 0.
    pub const BUILD: TrainParams = TrainParams {
        subspaces: 32,
        sample: 1 << 16,
        iterations: 15,
        seed: 0,
    };
}

/// A thread's scoring buffers, reused so that scoring allocates only when a longer document
/// (or query) comes.
#[derive(Default)]
struct Scratch {
    /// The query with each dimension multiplied by its step.
    query: Vec<f32>,
    /// The decoded document's packed int8 values.
    values: Vec<i8>,
    /// Its per-token scales, padded to whole blocks.
    scales: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// One document in the pq codec.
#[derive(Debug, Clone, Copy)]
pub struct PqDoc<'a> {
    /// The codebook the codes index.
    pub codebook: &'a Codebook,
    /// One code per token and subspace, token after token.
    pub codes: &'a [u8],
    /// One scale per token.
    pub scales: &'a [f16],
}

/// MaxSim of `query` (`n_q × dim` f32 values, row-major) against `doc`, computed by kernel `kind`
/// (see the [module documentation](self)): the int8 MaxSim of the query scaled by
/// [`Codebook::steps`] against the decoded document. A document without tokens scores 0, as does
/// an empty query.
///
/// # Panics
///
/// As [`kernels::maxsim_int8`] does, if `doc.codebook.dim() != dim`, or if `doc.codes` does not
/// hold one code per subspace for each of the `doc.scales.len()` tokens.
pub fn maxsim(kind: KernelKind, query: &[f32], n_q: usize, dim: usize, doc: PqDoc<'_>) -> f32 {
    maxsim_with(kind, query, n_q, dim, doc, None)
}

/// [`maxsim`] that also writes each query token's best document token into `matches`, as
/// [`kernels::maxsim_matches`] does (scores on the decoded vectors, as [`maxsim`] scores them).
///
/// # Panics
///
/// As [`maxsim`], and if `matches.len() != n_q`.
pub fn maxsim_matches(
    kind: KernelKind,
    query: &[f32],
    n_q: usize,
    dim: usize,
    doc: PqDoc<'_>,
    matches: &mut [TokenMax],
) -> f32 {
    maxsim_with(kind, query, n_q, dim, doc, Some(matches))
}

/// [`maxsim`] and [`maxsim_matches`].
fn maxsim_with(
    kind: KernelKind,
    query: &[f32],
    n_q: usize,
    dim: usize,
    doc: PqDoc<'_>,
    matches: Option<&mut [TokenMax]>,
) -> f32 {
    let codebook = doc.codebook;
    assert_eq!(codebook.dim(), dim, "pq maxsim: codebook of another dim");
    let m = doc.scales.len();
    SCRATCH.with_borrow_mut(|scratch| {
        scratch.query.clear();
        for row in query.chunks(dim) {
            scratch
                .query
                .extend(row.iter().zip(codebook.steps()).map(|(q, step)| q * step));
        }
        codebook.decode_packed(
            doc.codes,
            doc.scales,
            m,
            &mut scratch.values,
            &mut scratch.scales,
        );
        let (query, values, scales) = (&scratch.query, &scratch.values, &scratch.scales);
        match matches {
            None => kernels::maxsim_int8(kind, query, n_q, dim, values, scales, m),
            Some(matches) => {
                kernels::maxsim_int8_matches(kind, query, n_q, dim, values, scales, m, matches)
            }
        }
    })
}
