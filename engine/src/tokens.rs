//! The token-vector store: every document's token vectors as f16 rows, memory-mapped.

use crate::error::{Error, Result};
use crate::format::array::ArrayFile;
use crate::format::files;
use half::f16;
use std::path::Path;

/// Token vectors of all documents, row-major (`token_count × dim`), documents in order.
pub struct TokenStore {
    offsets: ArrayFile<u64>,
    vectors: ArrayFile<f16>,
    dim: usize,
}

impl TokenStore {
    /// Opens the token files of `dir` and checks their shapes against the manifest's counts.
    pub fn open(dir: &Path, doc_count: usize, token_count: usize, dim: usize) -> Result<Self> {
        let offsets_path = dir.join(files::TOKENS_OFFSETS);
        let vectors_path = dir.join(files::TOKENS_F16);
        let offsets = ArrayFile::<u64>::open(&offsets_path, files::TOKENS_OFFSETS)?;
        let vectors = ArrayFile::<f16>::open(&vectors_path, files::TOKENS_F16)?;
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
        if Some(vectors.len()) != token_count.checked_mul(dim) {
            return Err(Error::corrupt(
                &vectors_path,
                format!(
                    "{} values for {token_count} tokens of dim {dim}",
                    vectors.len()
                ),
            ));
        }
        Ok(TokenStore {
            offsets,
            vectors,
            dim,
        })
    }

    /// Dimensions per token.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The token vectors of `doc` (`n × dim` values), or `None` for an id past the end.
    pub fn doc(&self, doc: u32) -> Option<&[f16]> {
        let offs = self.offsets.as_slice();
        let start = *offs.get(doc as usize)? as usize;
        let end = *offs.get(doc as usize + 1)? as usize;
        self.vectors
            .as_slice()
            .get(start * self.dim..end * self.dim)
    }

    /// Bytes of token vectors stored.
    pub fn vector_bytes(&self) -> usize {
        self.vectors.len() * std::mem::size_of::<f16>()
    }
}
