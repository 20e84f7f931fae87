//! Loading a BERT model directory (`config.json`, `model.safetensors`, `tokenizer.json`) and
//! running its encoder over a padded batch with candle-transformers.

use super::text::TextTokenizer;
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use std::path::{Path, PathBuf};

/// A model directory's parsed configuration, weights and tokenizer.
pub(crate) struct BertFiles {
    pub dir: PathBuf,
    pub config: Config,
    pub weights: VarBuilder<'static>,
    pub tokenizer: TextTokenizer,
}

/// A required file of `dir`, or an error naming it.
fn required(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else if !dir.is_dir() {
        Err(Error::bad_input(
            dir.display().to_string(),
            "no such model directory",
        ))
    } else {
        Err(Error::bad_input(
            path.display().to_string(),
            "missing: a model directory needs config.json, model.safetensors and tokenizer.json",
        ))
    }
}

impl BertFiles {
    /// Reads `dir`; `max_len` caps the tokenizer (and must fit the position embeddings).
    pub fn load(dir: &Path, max_len: usize) -> Result<Self> {
        let config_path = required(dir, "config.json")?;
        let weights_path = required(dir, "model.safetensors")?;
        let tokenizer_path = required(dir, "tokenizer.json")?;
        let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
        let config: Config = serde_json::from_str(&text).map_err(|e| {
            Error::bad_input(
                config_path.display().to_string(),
                format!("not a BERT config: {e}"),
            )
        })?;
        if max_len > config.max_position_embeddings {
            return Err(Error::bad_input(
                config_path.display().to_string(),
                format!(
                    "maximum length {max_len} exceeds the model's {} positions",
                    config.max_position_embeddings
                ),
            ));
        }
        let bytes = std::fs::read(&weights_path).map_err(|e| Error::io(&weights_path, e))?;
        let weights = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &Device::Cpu)
            .map_err(|e| {
                Error::bad_input(
                    weights_path.display().to_string(),
                    format!("not a readable safetensors file: {e}"),
                )
            })?;
        let tokenizer = TextTokenizer::load(&tokenizer_path, max_len)?;
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(Error::bad_input(
                tokenizer_path.display().to_string(),
                format!(
                    "the tokenizer's {} tokens exceed the model's vocabulary of {}",
                    tokenizer.vocab_size(),
                    config.vocab_size
                ),
            ));
        }
        Ok(BertFiles {
            dir: dir.to_path_buf(),
            config,
            weights,
            tokenizer,
        })
    }

    /// An error naming the weights file, for a model that cannot be built from it.
    pub fn weights_error(&self, error: candle_core::Error) -> Error {
        Error::bad_input(
            self.dir.join("model.safetensors").display().to_string(),
            format!("does not hold this model's weights: {error}"),
        )
    }
}

/// The encoder of a model whose tensors are named `bert.*` (a task model such as
/// `BertForMaskedLM`) or unprefixed (a bare `BertModel`).
pub(crate) fn load_encoder(files: &BertFiles, weights: &VarBuilder<'static>) -> Result<BertModel> {
    let root = if weights.contains_tensor("bert.embeddings.word_embeddings.weight") {
        weights.pp("bert")
    } else {
        weights.clone()
    };
    BertModel::load(root, &files.config).map_err(|e| files.weights_error(e))
}

/// Runs `bert` over `seqs` (token ids, unpadded) as one batch padded to the longest; returns
/// the last hidden states `[batch, longest, hidden]`.
pub(crate) fn encode_padded(bert: &BertModel, seqs: &[&[u32]]) -> candle_core::Result<Tensor> {
    let longest = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut ids = vec![0u32; seqs.len() * longest];
    let mut mask = vec![0u32; seqs.len() * longest];
    for (row, seq) in seqs.iter().enumerate() {
        ids[row * longest..row * longest + seq.len()].copy_from_slice(seq);
        mask[row * longest..row * longest + seq.len()].fill(1);
    }
    let shape = (seqs.len(), longest);
    let ids = Tensor::from_vec(ids, shape, &Device::Cpu)?;
    let mask = Tensor::from_vec(mask, shape, &Device::Cpu)?;
    let types = ids.zeros_like()?;
    bert.forward(&ids, &types, Some(&mask))
}

/// Maps an inference failure to the engine error (it means a broken model, not a bad query).
pub(crate) fn inference_error(model: &Path, error: candle_core::Error) -> Error {
    Error::Encoder {
        model: model.to_path_buf(),
        message: error.to_string(),
    }
}
