//! The token-vector store: every document's token vectors as packed f16 blocks (the layout of
//! [`crate::kernels`]), memory-mapped.

use crate::error::{Error, Result};
use crate::format::array::ArrayFile;
use crate::format::files;
use crate::kernels::packed_len;
use half::f16;
use std::path::Path;

/// One document's token vectors: `tokens` vectors packed into `packed` (length
/// `packed_len(tokens, dim)`).
#[derive(Debug, Clone, Copy)]
pub struct DocTokens<'a> {
    /// Number of token vectors.
    pub tokens: usize,
    /// The packed values.
    pub packed: &'a [f16],
}

/// Token vectors of all documents, documents in order.
pub struct TokenStore {
    offsets: ArrayFile<u64>,
    padded: ArrayFile<u64>,
    vectors: ArrayFile<f16>,
    dim: usize,
}

impl TokenStore {
    /// Opens the token files of `dir` and checks their shapes against the manifest's counts:
    /// every document has at least one token, and its packed extent is its token count rounded
    /// up to a multiple of 16 (so the kernels' length checks always hold).
    pub fn open(dir: &Path, doc_count: usize, token_count: usize, dim: usize) -> Result<Self> {
        let offsets_path = dir.join(files::TOKENS_OFFSETS);
        let padded_path = dir.join(files::TOKENS_PADDED);
        let vectors_path = dir.join(files::TOKENS_PACKED);
        let offsets = ArrayFile::<u64>::open(&offsets_path, files::TOKENS_OFFSETS)?;
        let padded = ArrayFile::<u64>::open(&padded_path, files::TOKENS_PADDED)?;
        let vectors = ArrayFile::<f16>::open(&vectors_path, files::TOKENS_PACKED)?;
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
        if Some(vectors.len()) != padded_total.checked_mul(dim) {
            return Err(Error::corrupt(
                &vectors_path,
                format!(
                    "{} values for {padded_total} padded tokens of dim {dim}",
                    vectors.len()
                ),
            ));
        }
        Ok(TokenStore {
            offsets,
            padded,
            vectors,
            dim,
        })
    }

    /// Dimensions per token.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The token vectors of `doc`, or `None` for an id past the end.
    pub fn doc(&self, doc: u32) -> Option<DocTokens<'_>> {
        let d = doc as usize;
        let offs = self.offsets.as_slice();
        let tokens = (offs.get(d + 1)? - offs.get(d)?) as usize;
        let pads = self.padded.as_slice();
        let (start, end) = (*pads.get(d)? as usize, *pads.get(d + 1)? as usize);
        let packed = self
            .vectors
            .as_slice()
            .get(start * self.dim..end * self.dim)?;
        Some(DocTokens { tokens, packed })
    }

    /// Asks the kernel to read `doc`'s token vectors ahead (a cold candidate's pages are then on
    /// their way while earlier candidates are scored).
    pub fn prefetch(&self, doc: u32) {
        let pads = self.padded.as_slice();
        if let (Some(&start), Some(&end)) = (pads.get(doc as usize), pads.get(doc as usize + 1)) {
            self.vectors
                .will_need(start as usize * self.dim..end as usize * self.dim);
        }
    }

    /// Evicts the token vectors from memory, so the next reads come from the disk (for cold
    /// benchmarks).
    pub fn evict(&self) {
        self.vectors.evict();
    }

    /// Bytes of token vectors stored (padding included).
    pub fn vector_bytes(&self) -> usize {
        self.vectors.len() * std::mem::size_of::<f16>()
    }
}
