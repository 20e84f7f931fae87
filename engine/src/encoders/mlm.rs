//! The SPLADE-style sparse encoder over a BERT masked-language model.

use super::bert::{encode_padded, inference_error, load_encoder, BertFiles};
use super::{length_sorted_chunks, SparseTerms, TextTokenizer};
use crate::error::Result;
use candle_core::{IndexOp, Module, Tensor, D};
use candle_transformers::models::bert::{BertModel, BertOnlyMLMHead};
use std::path::{Path, PathBuf};

/// Default truncation of query text for the sparse encoder (wordpieces, special tokens
/// included).
pub const DEFAULT_MAX_LEN: usize = 128;

/// Sparse vectors from a `BertForMaskedLM` directory: weight(t) = max over the text's positions
/// of `log(1 + relu(logit_t))`, terms with weight 0 left out.
///
/// The MLM decoder may be stored (`cls.predictions.decoder.weight`) or tied to the word
/// embeddings (as `save_pretrained` writes it), with its bias as `cls.predictions.bias`.
pub struct MlmSparseEncoder {
    dir: PathBuf,
    tokenizer: TextTokenizer,
    bert: BertModel,
    head: BertOnlyMLMHead,
    vocab: Vec<String>,
}

impl MlmSparseEncoder {
    /// Loads the model in `dir`; texts are truncated to `max_len` wordpieces.
    pub fn load(dir: &Path, max_len: usize) -> Result<Self> {
        let files = BertFiles::load(dir, max_len)?;
        let raw = files.weights.clone();
        let tied = !raw.contains_tensor("cls.predictions.decoder.weight");
        let separate_bias = !raw.contains_tensor("cls.predictions.decoder.bias");
        let weights = raw.rename_f(move |name: &str| match name {
            "cls.predictions.decoder.weight" if tied => {
                "bert.embeddings.word_embeddings.weight".to_string()
            }
            "cls.predictions.decoder.bias" if separate_bias => "cls.predictions.bias".to_string(),
            other => other.to_string(),
        });
        let bert = load_encoder(&files, &weights)?;
        let head = BertOnlyMLMHead::load(weights.pp("cls"), &files.config)
            .map_err(|e| files.weights_error(e))?;
        let vocab = files.tokenizer.vocab();
        Ok(MlmSparseEncoder {
            dir: files.dir,
            tokenizer: files.tokenizer,
            bert,
            head,
            vocab,
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

    /// Sparse vectors of `texts`, in order.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<SparseTerms>> {
        let ids = texts
            .iter()
            .map(|t| self.tokenizer.encode(t))
            .collect::<Result<Vec<_>>>()?;
        let lens: Vec<usize> = ids.iter().map(Vec::len).collect();
        let mut out = vec![SparseTerms::new(); texts.len()];
        for chunk in length_sorted_chunks(&lens) {
            let seqs: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            let maxima = self
                .chunk_maxima(&seqs)
                .map_err(|e| inference_error(&self.dir, e))?;
            for (row, &i) in chunk.iter().enumerate() {
                out[i] = maxima[row]
                    .iter()
                    .enumerate()
                    .filter(|&(_, &logit)| logit > 0.0)
                    .filter_map(|(term, &logit)| {
                        let token = self.vocab.get(term)?;
                        Some((token.clone(), logit.ln_1p()))
                    })
                    .collect();
            }
        }
        Ok(out)
    }

    /// For each sequence, the maximum MLM logit of every vocabulary term over its positions
    /// (padding excluded: only the sequence's own rows go through the head).
    fn chunk_maxima(&self, seqs: &[&[u32]]) -> candle_core::Result<Vec<Vec<f32>>> {
        let hidden = encode_padded(&self.bert, seqs)?;
        seqs.iter()
            .enumerate()
            .map(|(row, seq)| {
                let states: Tensor = hidden.i((row, ..seq.len()))?;
                let logits = self.head.forward(&states)?;
                logits.max(D::Minus2)?.to_vec1::<f32>()
            })
            .collect()
    }
}
