//! Query encoders: text in, the two halves of a query out, in process and without a network.
//!
//! - [`MlmSparseEncoder`]: a BERT masked-language model read as a SPLADE encoder — for each
//!   vocabulary term, the weight is the maximum over the text's positions of
//!   `log(1 + relu(MLM logit))`.
//! - [`TokenVectorEncoder`]: a BERT encoder's last hidden states, one vector per wordpiece
//!   (special tokens included), optionally through an affine [`Projection`], L2-normalised.
//! - [`TableSparseEncoder`]: inference-free sparse encoding — tokenize, then look each distinct
//!   token up in a weight table (e.g. the index's IDF, see [`crate::weight_table::idf_table`]).
//!
//! The neural encoders run on the CPU with candle; every model is read from a local directory
//! holding `config.json`, `model.safetensors` and `tokenizer.json` (as Hugging Face saves
//! them). Encoders are `Send + Sync`: one loaded copy serves every thread. A batch of texts is
//! sorted by length and run in chunks of [`MAX_BATCH`] texts padded to the longest of the chunk.

mod bert;
pub mod mlm;
pub mod projection;
pub mod table;
pub mod text;
pub mod token_vectors;

pub use mlm::MlmSparseEncoder;
pub use projection::Projection;
pub use table::TableSparseEncoder;
pub use text::TextTokenizer;
pub use token_vectors::TokenVectorEncoder;

/// Texts run through a neural encoder together (the chunk of a batch padded to one length).
pub const MAX_BATCH: usize = 32;

/// A text's sparse vector: vocabulary terms (wordpiece strings) with weights > 0, in vocabulary
/// id order.
pub type SparseTerms = Vec<(String, f32)>;

/// A text's token vectors: `values.len() / dim` rows of `dim` values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenVectors {
    /// Values per token.
    pub dim: usize,
    /// The vectors, one row per wordpiece.
    pub values: Vec<f32>,
}

impl TokenVectors {
    /// Number of token vectors.
    pub fn len(&self) -> usize {
        self.values.len().checked_div(self.dim).unwrap_or(0)
    }

    /// Whether there are no token vectors.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Order of `lens` by decreasing length, split into chunks of at most [`MAX_BATCH`]: each
/// chunk pads to its first (longest) text.
fn length_sorted_chunks(lens: &[usize]) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lens[i]));
    order.chunks(MAX_BATCH).map(<[usize]>::to_vec).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_text_once_longest_first() {
        let lens: Vec<usize> = (0..70).map(|i| (i * 37) % 101).collect();
        let chunks = length_sorted_chunks(&lens);
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|c| c.len() <= MAX_BATCH));
        let mut seen: Vec<usize> = chunks.concat();
        for c in &chunks {
            assert!(c.windows(2).all(|w| lens[w[0]] >= lens[w[1]]));
        }
        assert!(lens[chunks[0][0]] == *lens.iter().max().unwrap());
        seen.sort_unstable();
        assert_eq!(seen, (0..70).collect::<Vec<_>>());
    }
}
