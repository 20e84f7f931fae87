//! The token-vector store: every document's token vectors, memory-mapped, in the packed block
//! layout of [`crate::kernels`] as f16 values or as int8 values with a scale per token, or as
//! product-quantization codes ([`crate::pq`]).

use crate::error::{Error, Result};
use crate::format::array::ArrayFile;
use crate::format::files;
use crate::kernels::{self, packed_len, KernelKind, TokenMax};
use crate::pq::{self, Codebook, PqDoc};
use half::f16;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// How token vectors are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// IEEE half floats: 2 bytes per value.
    F16,
    /// Symmetric int8 per token with one f32 scale per token: 1 byte per value + 4 per token.
    Int8,
    /// Product quantization: one byte per subspace (32 subspaces at most) into a codebook
    /// trained at build time, and a 2-byte scale per token: at most 34 bytes per token; see
    /// [`crate::pq`].
    Pq,
}

impl Codec {
    /// The name used on the command line and in the manifest (`f16`, `int8`, `pq`).
    pub fn name(self) -> &'static str {
        match self {
            Codec::F16 => "f16",
            Codec::Int8 => "int8",
            Codec::Pq => "pq",
        }
    }

    /// The codec called `name`, if any.
    pub fn from_name(name: &str) -> Option<Codec> {
        match name {
            "f16" => Some(Codec::F16),
            "int8" => Some(Codec::Int8),
            "pq" => Some(Codec::Pq),
            _ => None,
        }
    }
}

/// One document's packed values.
#[derive(Debug, Clone, Copy)]
pub enum DocData<'a> {
    /// f16 values (`packed_len(tokens, dim)`).
    F16(&'a [f16]),
    /// int8 values (`packed_len(tokens, dim)`) and per-token scales (`packed_scales_len(tokens)`).
    Int8 {
        /// The quantized values.
        values: &'a [i8],
        /// One scale per (padded) token.
        scales: &'a [f32],
    },
    /// Product-quantization codes and scales (not padded), and the index's codebook.
    Pq(PqDoc<'a>),
}

/// One document's token vectors.
#[derive(Debug, Clone, Copy)]
pub struct DocTokens<'a> {
    /// Number of token vectors.
    pub tokens: usize,
    /// The packed values.
    pub data: DocData<'a>,
}

impl DocTokens<'_> {
    /// MaxSim of `query` (`n_q × dim`, row-major) against this document with kernel `kind`.
    pub fn maxsim(&self, kind: KernelKind, query: &[f32], n_q: usize, dim: usize) -> f32 {
        match self.data {
            DocData::F16(packed) => kernels::maxsim(kind, query, n_q, dim, packed, self.tokens),
            DocData::Int8 { values, scales } => {
                kernels::maxsim_int8(kind, query, n_q, dim, values, scales, self.tokens)
            }
            DocData::Pq(doc) => pq::maxsim(kind, query, n_q, dim, doc),
        }
    }

    /// [`DocTokens::maxsim`] that also writes each query token's best document token and its dot
    /// product into `matches` (`n_q` entries; see [`kernels::maxsim_matches`]). The total is the
    /// one [`DocTokens::maxsim`] returns. A document without tokens scores 0 and leaves
    /// `matches` as it was.
    pub fn maxsim_matches(
        &self,
        kind: KernelKind,
        query: &[f32],
        n_q: usize,
        dim: usize,
        matches: &mut [TokenMax],
    ) -> f32 {
        match self.data {
            DocData::F16(packed) => {
                kernels::maxsim_matches(kind, query, n_q, dim, packed, self.tokens, matches)
            }
            DocData::Int8 { values, scales } => kernels::maxsim_int8_matches(
                kind,
                query,
                n_q,
                dim,
                values,
                scales,
                self.tokens,
                matches,
            ),
            DocData::Pq(doc) => pq::maxsim_matches(kind, query, n_q, dim, doc, matches),
        }
    }

    /// Replaces `out` with the document's token vectors as the kernels score them, `tokens`
    /// rows of `dim` f32 values, row-major: f16 values widened; int8 values times their token's
    /// scale; pq codes looked up in the 8-bit decoding tables, times the dimension's step and
    /// the token's scale (see [`pq`]). A dot product with a row equals the kernels' up to f32
    /// rounding (they sum in another order).
    pub fn decode(&self, dim: usize, out: &mut Vec<f32>) {
        out.clear();
        out.reserve(self.tokens * dim);
        let index = kernels::packed_index;
        match self.data {
            DocData::F16(packed) => {
                for t in 0..self.tokens {
                    out.extend((0..dim).map(|j| packed[index(t, j, dim)].to_f32()));
                }
            }
            DocData::Int8 { values, scales } => {
                for (t, &scale) in scales.iter().enumerate().take(self.tokens) {
                    out.extend((0..dim).map(|j| f32::from(values[index(t, j, dim)]) * scale));
                }
            }
            DocData::Pq(doc) => {
                let (mut values, mut scales) = (Vec::new(), Vec::new());
                doc.codebook.decode_packed(
                    doc.codes,
                    doc.scales,
                    self.tokens,
                    &mut values,
                    &mut scales,
                );
                let steps = doc.codebook.steps();
                for (t, &scale) in scales.iter().enumerate().take(self.tokens) {
                    out.extend(
                        (0..dim).map(|j| f32::from(values[index(t, j, dim)]) * steps[j] * scale),
                    );
                }
            }
        }
    }
}

enum Storage {
    F16(ArrayFile<f16>),
    Int8 {
        values: ArrayFile<i8>,
        scales: ArrayFile<f32>,
    },
    Pq {
        codes: ArrayFile<u8>,
        scales: ArrayFile<f16>,
        codebook: Codebook,
    },
}

/// Token vectors of all documents, documents in order.
pub struct TokenStore {
    offsets: ArrayFile<u64>,
    padded: ArrayFile<u64>,
    storage: Storage,
    dim: usize,
    /// Whether every page of the vector files was in memory at the last
    /// [`TokenStore::check_residency`] (false until then).
    resident: AtomicBool,
}

impl TokenStore {
    /// Opens the token files of `dir` for `codec` and checks their shapes against the
    /// manifest's counts: every document has at least one token, and its packed extent is its
    /// token count rounded up to a multiple of 16 (so the kernels' length checks always hold);
    /// with the pq codec, the codebook splits `dim` into subspaces and has 256 centroids per
    /// dimension, and there is one code per token and subspace and one scale per token.
    pub fn open(
        dir: &Path,
        codec: Codec,
        doc_count: usize,
        token_count: usize,
        dim: usize,
    ) -> Result<Self> {
        let offsets_path = dir.join(files::TOKENS_OFFSETS);
        let padded_path = dir.join(files::TOKENS_PADDED);
        let offsets = ArrayFile::<u64>::open(&offsets_path, files::TOKENS_OFFSETS)?;
        let padded = ArrayFile::<u64>::open(&padded_path, files::TOKENS_PADDED)?;
        let offs = offsets.as_slice();
        let ok = offs.len() == doc_count + 1
            && offs.first() == Some(&0)
            && offs.last() == Some(&(token_count as u64))
            && offs.windows(2).all(|w| w[0] < w[1]);
        if !ok {
            return Err(Error::corrupt(
                &offsets_path,
                format!(
                    "expected {} strictly ascending offsets from 0 to {token_count}",
                    doc_count + 1
                ),
            ));
        }
        let pads = padded.as_slice();
        let consistent = pads.len() == offs.len()
            && pads.first() == Some(&0)
            && pads.windows(2).zip(offs.windows(2)).all(|(p, o)| {
                p[0] <= p[1] && (p[1] - p[0]) as usize == packed_len((o[1] - o[0]) as usize, 1)
            });
        if !consistent {
            return Err(Error::corrupt(
                &padded_path,
                "padded offsets do not match the token counts rounded up to blocks of 16",
            ));
        }
        let padded_total = pads.last().copied().unwrap_or(0) as usize;
        let expect = |path: &Path, len: usize, want: Option<usize>, what: &str| {
            if Some(len) == want {
                Ok(())
            } else {
                Err(Error::corrupt(
                    path,
                    format!("{len} {what} for {padded_total} padded tokens of dim {dim}"),
                ))
            }
        };
        let storage = match codec {
            Codec::F16 => {
                let path = dir.join(files::TOKENS_PACKED);
                let values = ArrayFile::<f16>::open(&path, files::TOKENS_PACKED)?;
                expect(&path, values.len(), padded_total.checked_mul(dim), "values")?;
                Storage::F16(values)
            }
            Codec::Int8 => {
                let path = dir.join(files::TOKENS_INT8);
                let values = ArrayFile::<i8>::open(&path, files::TOKENS_INT8)?;
                expect(&path, values.len(), padded_total.checked_mul(dim), "values")?;
                let scales_path = dir.join(files::TOKENS_SCALES);
                let scales = ArrayFile::<f32>::open(&scales_path, files::TOKENS_SCALES)?;
                expect(&scales_path, scales.len(), Some(padded_total), "scales")?;
                Storage::Int8 { values, scales }
            }
            Codec::Pq => {
                let bounds_path = dir.join(files::PQ_SUBSPACES);
                let bounds = ArrayFile::<u32>::open(&bounds_path, files::PQ_SUBSPACES)?;
                let codebook_path = dir.join(files::PQ_CODEBOOK);
                let centroids = ArrayFile::<f32>::open(&codebook_path, files::PQ_CODEBOOK)?;
                let codebook = Codebook::from_parts(dim, bounds.as_slice(), centroids.as_slice())
                    .map_err(|message| {
                    Error::corrupt(
                        &codebook_path,
                        format!("{message} (with {})", files::PQ_SUBSPACES),
                    )
                })?;
                let codes_path = dir.join(files::PQ_CODES);
                let codes = ArrayFile::<u8>::open(&codes_path, files::PQ_CODES)?;
                let subspaces = codebook.subspaces();
                if Some(codes.len()) != token_count.checked_mul(subspaces) {
                    return Err(Error::corrupt(
                        &codes_path,
                        format!(
                            "{} codes for {token_count} tokens of {subspaces} subspaces",
                            codes.len()
                        ),
                    ));
                }
                let scales_path = dir.join(files::PQ_SCALES);
                let scales = ArrayFile::<f16>::open(&scales_path, files::PQ_SCALES)?;
                if scales.len() != token_count {
                    return Err(Error::corrupt(
                        &scales_path,
                        format!("{} scales for {token_count} tokens", scales.len()),
                    ));
                }
                Storage::Pq {
                    codes,
                    scales,
                    codebook,
                }
            }
        };
        Ok(TokenStore {
            offsets,
            padded,
            storage,
            dim,
            resident: AtomicBool::new(false),
        })
    }

    /// Dimensions per token.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The PQ codebook, when stored with the PQ codec.
    pub fn codebook(&self) -> Option<&Codebook> {
        match &self.storage {
            Storage::Pq { codebook, .. } => Some(codebook),
            _ => None,
        }
    }

    /// The token range of `doc`: its rows in the build's input (and its positions in any
    /// per-token file), without padding; `None` for an id past the end.
    pub fn token_range(&self, doc: u32) -> Option<std::ops::Range<usize>> {
        let offs = self.offsets.as_slice();
        Some(*offs.get(doc as usize)? as usize..*offs.get(doc as usize + 1)? as usize)
    }

    /// The padded token range of `doc`.
    fn padded_range(&self, doc: u32) -> Option<std::ops::Range<usize>> {
        let pads = self.padded.as_slice();
        Some(*pads.get(doc as usize)? as usize..*pads.get(doc as usize + 1)? as usize)
    }

    /// The token vectors of `doc`, or `None` for an id past the end.
    pub fn doc(&self, doc: u32) -> Option<DocTokens<'_>> {
        let tokens = self.token_range(doc)?;
        let range = self.padded_range(doc)?;
        let values = range.start * self.dim..range.end * self.dim;
        let data = match &self.storage {
            Storage::F16(packed) => DocData::F16(packed.as_slice().get(values)?),
            Storage::Int8 { values: v, scales } => DocData::Int8 {
                values: v.as_slice().get(values)?,
                scales: scales.as_slice().get(range)?,
            },
            Storage::Pq {
                codes,
                scales,
                codebook,
            } => {
                let m = codebook.subspaces();
                DocData::Pq(PqDoc {
                    codebook,
                    codes: codes.as_slice().get(tokens.start * m..tokens.end * m)?,
                    scales: scales.as_slice().get(tokens.clone())?,
                })
            }
        };
        Some(DocTokens {
            tokens: tokens.len(),
            data,
        })
    }

    /// Asks the kernel to read `doc`'s token vectors ahead (a cold candidate's pages are then on
    /// their way while earlier candidates are scored).
    pub fn prefetch(&self, doc: u32) {
        let (Some(tokens), Some(range)) = (self.token_range(doc), self.padded_range(doc)) else {
            return;
        };
        let values = range.start * self.dim..range.end * self.dim;
        match &self.storage {
            Storage::F16(packed) => packed.will_need(values),
            Storage::Int8 { values: v, scales } => {
                v.will_need(values);
                scales.will_need(range);
            }
            Storage::Pq {
                codes,
                scales,
                codebook,
            } => {
                let m = codebook.subspaces();
                codes.will_need(tokens.start * m..tokens.end * m);
                scales.will_need(tokens);
            }
        }
    }

    /// Evicts the token vectors from memory, so the next reads come from the disk (for cold
    /// benchmarks).
    pub fn evict(&self) {
        match &self.storage {
            Storage::F16(packed) => packed.evict(),
            Storage::Int8 { values, scales } => {
                values.evict();
                scales.evict();
            }
            Storage::Pq { codes, scales, .. } => {
                codes.evict();
                scales.evict();
            }
        }
    }

    /// Checks whether every page of the vector files is in memory now (one `mincore` per file:
    /// about a millisecond per GiB) and remembers the answer for [`TokenStore::needs_prefetch`].
    /// Servers call it now and then from a background thread; returns the answer.
    pub fn check_residency(&self) -> bool {
        let resident = match &self.storage {
            Storage::F16(packed) => packed.is_resident(),
            Storage::Int8 { values, scales } => values.is_resident() && scales.is_resident(),
            Storage::Pq { codes, scales, .. } => codes.is_resident() && scales.is_resident(),
        };
        self.resident.store(resident, Ordering::Relaxed);
        resident
    }

    /// Whether [`TokenStore::prefetch`] can help: false when the last
    /// [`TokenStore::check_residency`] found every page in memory (a `MADV_WILLNEED` per
    /// candidate then only costs a system call), true otherwise or before any check.
    pub fn needs_prefetch(&self) -> bool {
        !self.resident.load(Ordering::Relaxed)
    }

    /// Bytes of the token-vector files in memory now (page-cache residency of their mappings).
    pub fn resident_bytes(&self) -> usize {
        match &self.storage {
            Storage::F16(packed) => packed.resident_bytes(),
            Storage::Int8 { values, scales } => values.resident_bytes() + scales.resident_bytes(),
            Storage::Pq { codes, scales, .. } => codes.resident_bytes() + scales.resident_bytes(),
        }
    }

    /// Bytes of token vectors stored (scales and padding included). For the pq codec, the codes
    /// and scales: the codebook is a fixed size per index (`256 · dim` f32 values), amortised
    /// over all tokens, and not counted.
    pub fn vector_bytes(&self) -> usize {
        match &self.storage {
            Storage::F16(packed) => packed.len() * 2,
            Storage::Int8 { values, scales } => values.len() + scales.len() * 4,
            Storage::Pq { codes, scales, .. } => codes.len() + scales.len() * 2,
        }
    }
}
