//! Inference-free sparse query encoding: tokenize, then look each distinct token up in a
//! per-token weight table (as OpenSearch's inference-free sparse models and Li-LSR do). No
//! model runs at query time.

use super::{SparseTerms, TextTokenizer};
use crate::error::{Error, Result};
use crate::pipeline::check_term_weight;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tandem_data::npy::{NpyArray, NpyDType};

/// Default truncation of query text for the table encoder.
pub const DEFAULT_MAX_LEN: usize = 512;

/// A weight per tokenizer token; a query's sparse vector is the weight of each of its distinct
/// tokens (special tokens and zero weights left out).
pub struct TableSparseEncoder {
    tokenizer: TextTokenizer,
    weights: Vec<f32>,
    vocab: Vec<String>,
    table: PathBuf,
}

impl TableSparseEncoder {
    /// Loads the weight table `table` for `tokenizer`. The table is either a JSON object
    /// `{"token": weight, ...}` (tokens absent weigh 0; each must be in the tokenizer's
    /// vocabulary) or a 1-D float `.npy` array indexed by token id (`vocab_size` long).
    /// Weights must be finite, ≥ 0 and at most `MAX_TERM_WEIGHT`.
    pub fn load(table: &Path, tokenizer: TextTokenizer) -> Result<Self> {
        let location = table.display().to_string();
        let weights = if table.extension().is_some_and(|e| e == "npy") {
            read_npy_table(table, tokenizer.vocab_size())?
        } else {
            read_json_table(table, &tokenizer)?
        };
        if let Some((id, message)) = weights
            .iter()
            .enumerate()
            .find_map(|(id, &w)| check_term_weight(w).err().map(|m| (id, m)))
        {
            let token = tokenizer.vocab().swap_remove(id);
            return Err(Error::bad_input(
                format!("{location}: token {token:?}"),
                message,
            ));
        }
        Ok(TableSparseEncoder {
            vocab: tokenizer.vocab(),
            tokenizer,
            weights,
            table: table.to_path_buf(),
        })
    }

    /// The table file.
    pub fn table(&self) -> &Path {
        &self.table
    }

    /// The tokenizer (and its truncation length).
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Tokens with a positive weight.
    pub fn weighted_tokens(&self) -> usize {
        self.weights.iter().filter(|&&w| w > 0.0).count()
    }

    /// The sparse vector of `text`: each distinct non-special token with its table weight.
    pub fn encode(&self, text: &str) -> Result<SparseTerms> {
        let (ids, special) = self.tokenizer.encode_with_mask(text)?;
        let mut distinct: Vec<u32> = ids
            .iter()
            .zip(&special)
            .filter(|&(_, &s)| !s)
            .map(|(&id, _)| id)
            .collect();
        distinct.sort_unstable();
        distinct.dedup();
        Ok(distinct
            .into_iter()
            .filter_map(|id| {
                let weight = *self.weights.get(id as usize)?;
                (weight > 0.0).then(|| (self.vocab[id as usize].clone(), weight))
            })
            .collect())
    }

    /// Sparse vectors of `texts`, in order.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<SparseTerms>> {
        texts.iter().map(|t| self.encode(t)).collect()
    }
}

fn read_npy_table(table: &Path, vocab_size: usize) -> Result<Vec<f32>> {
    let array = NpyArray::open(table)?;
    let location = table.display().to_string();
    if !matches!(array.dtype(), NpyDType::F32 | NpyDType::F16) || array.shape() != [vocab_size] {
        return Err(Error::bad_input(
            location,
            format!(
                "expected a 1-D float32 array of the tokenizer's {vocab_size} tokens, got {} of shape {:?}",
                array.dtype().name(),
                array.shape()
            ),
        ));
    }
    let mut weights = Vec::new();
    array.rows_f32(0..vocab_size, None, &mut weights)?;
    Ok(weights)
}

fn read_json_table(table: &Path, tokenizer: &TextTokenizer) -> Result<Vec<f32>> {
    let location = table.display().to_string();
    let text = std::fs::read_to_string(table).map_err(|e| Error::io(table, e))?;
    let entries: BTreeMap<String, f64> = serde_json::from_str(&text).map_err(|e| {
        Error::bad_input(
            format!("{location}:{}", e.line()),
            format!("expected a JSON object {{\"token\": weight, ...}}: {e}"),
        )
    })?;
    let mut weights = vec![0f32; tokenizer.vocab_size()];
    for (token, weight) in entries {
        let id = tokenizer.token_id(&token).ok_or_else(|| {
            Error::bad_input(
                format!("{location}: token {token:?}"),
                format!("not in the vocabulary of {}", tokenizer.path().display()),
            )
        })?;
        weights[id as usize] = weight as f32;
    }
    Ok(weights)
}
