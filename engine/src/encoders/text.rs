//! Tokenization of query text with a Hugging Face `tokenizer.json` (pure Rust `tokenizers`).

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use tokenizers::{Tokenizer, TruncationParams};

/// A WordPiece (or any `tokenizer.json`) tokenizer that adds the model's special tokens and
/// truncates to a maximum length; never pads (encoders pad their own batches).
pub struct TextTokenizer {
    inner: Tokenizer,
    max_len: usize,
    path: PathBuf,
}

impl TextTokenizer {
    /// Loads `path` (a `tokenizer.json`, or a directory holding one); texts are truncated to
    /// `max_len` tokens, special tokens included.
    pub fn load(path: &Path, max_len: usize) -> Result<Self> {
        let path = if path.is_dir() {
            path.join("tokenizer.json")
        } else {
            path.to_path_buf()
        };
        if !path.is_file() {
            return Err(Error::bad_input(
                path.display().to_string(),
                "no such tokenizer file (expected a Hugging Face tokenizer.json)",
            ));
        }
        let bad = |message: String| Error::bad_input(path.display().to_string(), message);
        let mut inner = Tokenizer::from_file(&path)
            .map_err(|e| bad(format!("not a readable tokenizer.json: {e}")))?;
        if max_len < 2 {
            return Err(bad(format!(
                "maximum length {max_len} leaves no room for text"
            )));
        }
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..TruncationParams::default()
            }))
            .map_err(|e| bad(format!("cannot truncate at {max_len} tokens: {e}")))?;
        inner.with_padding(None);
        Ok(TextTokenizer {
            inner,
            max_len,
            path,
        })
    }

    /// The `tokenizer.json` this was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Longest encoding, special tokens included.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Vocabulary size (added tokens included): every id [`Self::encode`] returns is below it.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Every token string by id (`vocab_size` of them); ids without a string get an empty one.
    pub fn vocab(&self) -> Vec<String> {
        (0..self.vocab_size() as u32)
            .map(|id| self.inner.id_to_token(id).unwrap_or_default())
            .collect()
    }

    /// The id of token string `token`, if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Token ids of `text` with the special tokens, truncated to the maximum length.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with_mask(text).map(|(ids, _)| ids)
    }

    /// The wordpiece strings of `text`, one per id [`Self::encode`] gives (special tokens
    /// included).
    pub fn wordpieces(&self, text: &str) -> Result<Vec<String>> {
        let ids = self.encode(text)?;
        Ok(ids
            .iter()
            .map(|&id| self.inner.id_to_token(id).unwrap_or_default())
            .collect())
    }

    /// Token ids of `text` and, parallel to them, whether each is a special token.
    pub fn encode_with_mask(&self, text: &str) -> Result<(Vec<u32>, Vec<bool>)> {
        let encoding = self.inner.encode(text, true).map_err(|e| {
            Error::invalid("query.text", format!("the text cannot be tokenized: {e}"))
        })?;
        let special = encoding
            .get_special_tokens_mask()
            .iter()
            .map(|&m| m != 0)
            .collect();
        Ok((encoding.get_ids().to_vec(), special))
    }
}
