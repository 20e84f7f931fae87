//! The token-vector encoder: a BERT encoder's last hidden states, one per wordpiece.

use super::bert::{encode_padded, inference_error, load_encoder, BertFiles};
use super::projection::normalize_rows;
use super::{length_sorted_chunks, Projection, TextTokenizer, TokenVectors};
use crate::error::{Error, Result};
use candle_core::IndexOp;
use candle_transformers::models::bert::BertModel;
use std::path::{Path, PathBuf};

/// Default truncation of query text for the token-vector encoder.
pub const DEFAULT_MAX_LEN: usize = 128;

/// Token vectors from a BERT directory: the last hidden state of every wordpiece (`[CLS]` and
/// `[SEP]` included), through the optional [`Projection`], each L2-normalised.
pub struct TokenVectorEncoder {
    dir: PathBuf,
    tokenizer: TextTokenizer,
    bert: BertModel,
    hidden: usize,
    projection: Option<Projection>,
}

impl TokenVectorEncoder {
    /// Loads the model in `dir`; texts are truncated to `max_len` wordpieces. The projection's
    /// input size must be the model's hidden size.
    pub fn load(dir: &Path, max_len: usize, projection: Option<Projection>) -> Result<Self> {
        let files = BertFiles::load(dir, max_len)?;
        let hidden = files.config.hidden_size;
        if let Some(p) = &projection {
            if p.in_dim() != hidden {
                return Err(Error::bad_input(
                    p.files().0.display().to_string(),
                    format!(
                        "the projection takes {}-d vectors but the model in {} has hidden size {hidden}",
                        p.in_dim(),
                        dir.display()
                    ),
                ));
            }
        }
        let bert = load_encoder(&files, &files.weights)?;
        Ok(TokenVectorEncoder {
            dir: files.dir,
            tokenizer: files.tokenizer,
            bert,
            hidden,
            projection,
        })
    }

    /// The model directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The tokenizer (and its truncation length).
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// The projection, if any.
    pub fn projection(&self) -> Option<&Projection> {
        self.projection.as_ref()
    }

    /// Values per output vector.
    pub fn dim(&self) -> usize {
        self.projection
            .as_ref()
            .map_or(self.hidden, Projection::out_dim)
    }

    /// Token vectors of `texts`, in order.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<TokenVectors>> {
        let ids = texts
            .iter()
            .map(|t| self.tokenizer.encode(t))
            .collect::<Result<Vec<_>>>()?;
        let lens: Vec<usize> = ids.iter().map(Vec::len).collect();
        let mut out = vec![
            TokenVectors {
                dim: self.dim(),
                values: Vec::new(),
            };
            texts.len()
        ];
        for chunk in length_sorted_chunks(&lens) {
            let seqs: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            let states = self
                .chunk_states(&seqs)
                .map_err(|e| inference_error(&self.dir, e))?;
            for (state, &i) in states.into_iter().zip(&chunk) {
                let values = &mut out[i].values;
                match &self.projection {
                    Some(p) => p.apply(&state, values),
                    None => *values = state,
                }
                normalize_rows(values, self.dim());
            }
        }
        Ok(out)
    }

    /// Each sequence's hidden states (its own rows only), row-major.
    fn chunk_states(&self, seqs: &[&[u32]]) -> candle_core::Result<Vec<Vec<f32>>> {
        let hidden = encode_padded(&self.bert, seqs)?;
        seqs.iter()
            .enumerate()
            .map(|(row, seq)| {
                hidden
                    .i((row, ..seq.len()))?
                    .flatten_all()?
                    .to_vec1::<f32>()
            })
            .collect()
    }
}
