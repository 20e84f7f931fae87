//! MaxSim kernels over a packed, SIMD-friendly document layout.
//!
//! MaxSim(Q, D) = Σ over query tokens `q` of max over document tokens `d` of `dot(q, d)`. The
//! query is `n_q × dim` f32 values, row-major. The document is stored *packed* (see below), as
//! IEEE half floats, so that one vector load yields the same dimension of 16 consecutive tokens:
//! a kernel keeps a tile of query tokens × 16 document tokens of dot products in registers,
//! broadcasting one query value per query token and dimension and fusing the running max.
//!
//! # Packed document layout
//!
//! A document of `m ≥ 0` tokens of dimension `dim ≥ 1` is stored as `ceil(m / 16)` *blocks* of
//! [`BLOCK`] = 16 tokens, blocks in token order, with nothing between them. Block `b` holds tokens
//! `16·b ..= 16·b + 15` and is `16 · dim` consecutive f16 values, dimension-major: for each
//! dimension `j` in `0..dim`, the values of dimension `j` of the block's 16 tokens, in token order.
//! So the value of token `t`, dimension `j` is at index
//!
//! ```text
//! (t / 16) · 16 · dim  +  j · 16  +  t % 16          (see `packed_index`)
//! ```
//!
//! and the packed length is `ceil(m / 16) · 16 · dim` values ([`packed_len`]); a document without
//! tokens packs to nothing. The positions of the last block past token `m − 1` (the *padding*)
//! are written as +0.0 by [`pack_doc`]; readers must not depend on their content (every kernel
//! here ignores them, whatever they hold). Values are stored little-endian, 2 bytes each, like the
//! rest of the index. Each block is `32 · dim` bytes, so blocks start at multiples of 32 bytes from
//! the document's start; the kernels require no alignment.
//!
//! # Kernels
//!
//! [`KernelKind`] names the implementations; [`detect`] picks the fastest one the running CPU
//! supports, and [`maxsim`] runs a given one. All compute the same sum up to floating-point
//! rounding (each is a sum of f32 products in a different association; see the tests for the
//! bound). Document values are widened exactly to f32 before use; inputs are expected to be
//! finite (the index builder checks this).
//!
//! # Int8 codec
//!
//! [`pack_doc_int8`] stores token vectors as `i8` in the same block layout plus one f32 scale per
//! token (half the bytes of f16), and [`maxsim_int8`] scores such documents with the same kernels'
//! tiling; see the [`int8`] module for the layout, the quantization error bound and the kernels.
//!
//! # Nearest centroid
//!
//! [`nearest`] finds the nearest of a set of centroids packed in the same block layout (as f32),
//! for product-quantization training and encoding; see the [`nearest`](mod@nearest) module.
//!
//! # FMA peak
//!
//! [`fma_peak_gflops`] measures the single-core FMA throughput that benchmarks state the kernels'
//! throughput against: a measurement, not a kernel (module `peak`).

use half::f16;

pub mod int8;
pub mod nearest;
// The engine's SIMD `unsafe` (intrinsics, unchecked loads, `#[target_feature]` calls) lives in
// these modules alone, each block with its `// SAFETY:` argument.
#[allow(unsafe_code)]
mod peak;
mod scalar;

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86;

#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
#[allow(unsafe_code)]
mod neon;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tests_int8;

#[cfg(test)]
mod tests_nearest;

#[cfg(test)]
mod tests_coverage;

#[cfg(test)]
mod tests_matches;

pub use int8::{
    maxsim_int8, maxsim_int8_matches, pack_doc_int8, packed_scales_len, unpack_doc_int8,
};
pub use nearest::{nearest, pack_centroids};
pub use peak::fma_peak_gflops;

/// Tokens per block of the packed layout (one 512-bit register of f32, or two of f16).
pub const BLOCK: usize = 16;

/// Number of f16 values a document of `m` tokens of dimension `dim` packs to:
/// `ceil(m / 16) · 16 · dim`.
pub fn packed_len(m: usize, dim: usize) -> usize {
    m.div_ceil(BLOCK) * BLOCK * dim
}

/// Index in the packed layout of token `token`, dimension `j`, for dimension `dim`:
/// `(token / 16) · 16 · dim + j · 16 + token % 16`.
pub fn packed_index(token: usize, j: usize, dim: usize) -> usize {
    (token / BLOCK) * BLOCK * dim + j * BLOCK + token % BLOCK
}

/// Appends to `out` the packed layout (see the [module documentation](self)) of a document given
/// as `rows`: `m × dim` values, row-major (token after token), with `m = rows.len() / dim`.
/// Padding positions are +0.0. `out` is not cleared first, so documents can be packed one after
/// the other into one buffer.
///
/// # Panics
///
/// If `dim` is 0 or `rows.len()` is not a multiple of `dim`.
pub fn pack_doc(rows: &[f16], dim: usize, out: &mut Vec<f16>) {
    assert!(dim > 0, "pack_doc: dim must be > 0");
    assert!(
        rows.len().is_multiple_of(dim),
        "pack_doc: {} values are not whole rows of dimension {dim}",
        rows.len()
    );
    let m = rows.len() / dim;
    let start = out.len();
    out.resize(start + packed_len(m, dim), f16::ZERO);
    let packed = &mut out[start..];
    for (t, row) in rows.chunks_exact(dim).enumerate() {
        for (j, &value) in row.iter().enumerate() {
            packed[packed_index(t, j, dim)] = value;
        }
    }
}

/// Appends to `out` the `m × dim` row-major token rows of a packed document (the inverse of
/// [`pack_doc`]; padding is dropped).
///
/// # Panics
///
/// If `dim` is 0 or `packed.len() != packed_len(m, dim)`.
pub fn unpack_doc(packed: &[f16], m: usize, dim: usize, out: &mut Vec<f16>) {
    assert!(dim > 0, "unpack_doc: dim must be > 0");
    assert_eq!(
        packed.len(),
        packed_len(m, dim),
        "unpack_doc: packed length does not match {m} tokens of dimension {dim}"
    );
    out.reserve(m * dim);
    for t in 0..m {
        out.extend((0..dim).map(|j| packed[packed_index(t, j, dim)]));
    }
}

/// A MaxSim implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelKind {
    /// Plain loops over the packed layout; the reference, available everywhere.
    Scalar,
    /// x86-64 with AVX2, FMA and F16C: tiles of 6 query tokens × 16 document tokens.
    Avx2,
    /// x86-64 with AVX-512F: the document in steps of up to 48 tokens, each scored by tiles of up
    /// to 9 query tokens × 48 document tokens (14 × 32 for steps of 32 tokens).
    Avx512,
    /// aarch64 with NEON (Advanced SIMD): tiles of 6 query tokens × 16 document tokens.
    Neon,
}

impl KernelKind {
    /// Every kind, in order from the reference to the widest.
    pub const ALL: [KernelKind; 4] = [
        KernelKind::Scalar,
        KernelKind::Avx2,
        KernelKind::Avx512,
        KernelKind::Neon,
    ];

    /// A short lowercase name (`scalar`, `avx2`, `avx512`, `neon`), for logs and benchmarks.
    pub fn name(self) -> &'static str {
        match self {
            KernelKind::Scalar => "scalar",
            KernelKind::Avx2 => "avx2",
            KernelKind::Avx512 => "avx512",
            KernelKind::Neon => "neon",
        }
    }

    /// Whether this kind can run on this CPU (checked at run time on x86-64; NEON is part of
    /// the aarch64 targets' baseline).
    pub fn is_available(self) -> bool {
        match self {
            KernelKind::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            KernelKind::Avx2 => x86::avx2_available(),
            #[cfg(target_arch = "x86_64")]
            KernelKind::Avx512 => x86::avx512_available(),
            #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
            KernelKind::Neon => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The kinds available on this CPU, in the order of [`KernelKind::ALL`].
    pub fn available() -> Vec<KernelKind> {
        KernelKind::ALL
            .into_iter()
            .filter(|kind| kind.is_available())
            .collect()
    }
}

impl std::fmt::Display for KernelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The fastest kernel this CPU supports: AVX-512, else AVX2, on x86-64; NEON on aarch64;
/// otherwise the scalar reference.
pub fn detect() -> KernelKind {
    [KernelKind::Avx512, KernelKind::Avx2, KernelKind::Neon]
        .into_iter()
        .find(|kind| kind.is_available())
        .unwrap_or(KernelKind::Scalar)
}

/// MaxSim of a query against one packed document, computed by the kernel `kind`.
///
/// `query` is `n_q × dim` f32 values, row-major; `doc_packed` is a document of `m` tokens in the
/// packed layout (`packed_len(m, dim)` values, as written by [`pack_doc`]). Returns
/// Σ over query tokens of the best dot product with any of the `m` document tokens; padding never
/// takes part. A document without tokens (`m = 0`) scores 0, as does an empty query.
///
/// # Panics
///
/// If `kind` is not available on this CPU ([`KernelKind::is_available`]), if `dim` is 0, if
/// `query.len() != n_q · dim`, or if `doc_packed.len() != packed_len(m, dim)`.
pub fn maxsim(
    kind: KernelKind,
    query: &[f32],
    n_q: usize,
    dim: usize,
    doc_packed: &[f16],
    m: usize,
) -> f32 {
    maxsim_f16(kind, query, n_q, dim, doc_packed, m, None)
}

/// Where one query token's MaxSim term comes from: the document token with the largest dot
/// product (the first such in document order, with every kernel) and that dot product.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenMax {
    /// Position of the document token (0-based, padding never).
    pub token: u32,
    /// Its dot product with the query token (scaled, for int8).
    pub score: f32,
}

impl TokenMax {
    /// A placeholder before a kernel writes the real match: token 0, score −∞.
    pub const NONE: TokenMax = TokenMax {
        token: 0,
        score: f32::NEG_INFINITY,
    };
}

/// [`maxsim`] that also writes, for each query token, its best document token into `matches`
/// (`n_q` entries). The total is the one [`maxsim`] returns with the same kernel, bit for bit,
/// and it is the sum of the matches' scores in query order. The kernels track the argmax in
/// their running maxima (a compare and a blend per block and query token, beside `dim` FMAs), so
/// explaining costs little more than scoring. NEON has no such variant yet: on aarch64 the
/// scalar reference answers.
///
/// # Panics
///
/// As [`maxsim`], and if `matches.len() != n_q`.
pub fn maxsim_matches(
    kind: KernelKind,
    query: &[f32],
    n_q: usize,
    dim: usize,
    doc_packed: &[f16],
    m: usize,
    matches: &mut [TokenMax],
) -> f32 {
    assert_eq!(
        matches.len(),
        n_q,
        "maxsim_matches: one match per query token"
    );
    maxsim_f16(kind, query, n_q, dim, doc_packed, m, Some(matches))
}

/// [`maxsim`] and [`maxsim_matches`].
fn maxsim_f16(
    kind: KernelKind,
    query: &[f32],
    n_q: usize,
    dim: usize,
    doc_packed: &[f16],
    m: usize,
    matches: Option<&mut [TokenMax]>,
) -> f32 {
    check_shapes(query, n_q, dim, doc_packed, m);
    if m == 0 || n_q == 0 {
        return 0.0;
    }
    match kind {
        KernelKind::Scalar => scalar::maxsim(query, dim, doc_packed, m, matches),
        #[cfg(target_arch = "x86_64")]
        KernelKind::Avx2 => x86::maxsim_avx2(query, dim, doc_packed, m, matches),
        #[cfg(target_arch = "x86_64")]
        KernelKind::Avx512 => x86::maxsim_avx512(query, dim, doc_packed, m, matches),
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        KernelKind::Neon => match matches {
            None => neon::maxsim(query, dim, doc_packed, m),
            Some(matches) => scalar::maxsim(query, dim, doc_packed, m, Some(matches)),
        },
        #[allow(unreachable_patterns)]
        _ => panic!("MaxSim kernel `{kind}` is not available on this CPU"),
    }
}

/// Splits `n` query tokens into `ceil(n / max)` consecutive tiles of nearly equal size (none
/// larger than `max`), as `(first token, tokens)`: 32 tokens with `max` 14 give 11, 11 and 10,
/// which keeps every tile's registers busy instead of leaving a small last tile.
#[cfg_attr(
    not(any(
        target_arch = "x86_64",
        all(target_arch = "aarch64", target_feature = "neon")
    )),
    allow(dead_code)
)]
fn tiles(n: usize, max: usize) -> impl Iterator<Item = (usize, usize)> {
    let count = n.div_ceil(max);
    let mut start = 0;
    (0..count).map(move |i| {
        let rows = (n - start).div_ceil(count - i);
        let first = start;
        start += rows;
        (first, rows)
    })
}

/// Number of real (not padding) tokens in block `b` of a document of `m` tokens (`b` must be
/// below `ceil(m / 16)`): 16, except possibly in the last block.
#[cfg_attr(
    not(any(
        target_arch = "x86_64",
        all(target_arch = "aarch64", target_feature = "neon")
    )),
    allow(dead_code)
)]
fn tokens_in_block(m: usize, b: usize) -> usize {
    (m - b * BLOCK).min(BLOCK)
}

/// Panics unless `query` is whole rows of `dim` and `doc` is a packed document of `m ≥ 1` tokens
/// (with `scales`, if given, its per-token scales): the SIMD kernels' own checks, which make their
/// unchecked reads sound whoever calls them.
#[cfg_attr(
    not(any(
        target_arch = "x86_64",
        all(target_arch = "aarch64", target_feature = "neon")
    )),
    allow(dead_code)
)]
fn check_kernel_args<T>(query: &[f32], dim: usize, doc: &[T], scales: Option<&[f32]>, m: usize) {
    assert!(
        dim > 0 && query.len().is_multiple_of(dim),
        "maxsim: bad query shape"
    );
    assert!(
        m > 0,
        "maxsim: the kernels need at least one document token"
    );
    assert_eq!(doc.len(), packed_len(m, dim), "maxsim: bad packed length");
    if let Some(scales) = scales {
        assert_eq!(
            scales.len(),
            packed_scales_len(m),
            "maxsim: bad scales length"
        );
    }
}

/// Panics unless the arguments of [`maxsim`] describe consistent shapes.
fn check_shapes(query: &[f32], n_q: usize, dim: usize, doc_packed: &[f16], m: usize) {
    assert!(dim > 0, "maxsim: dim must be > 0");
    assert_eq!(
        Some(query.len()),
        n_q.checked_mul(dim),
        "maxsim: query length does not match {n_q} tokens of dimension {dim}"
    );
    assert_eq!(
        doc_packed.len(),
        packed_len(m, dim),
        "maxsim: packed document length does not match {m} tokens of dimension {dim}"
    );
}
