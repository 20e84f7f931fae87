//! Document token strings: what each document token vector stands for (a wordpiece, say), so
//! explanations can show text rather than positions. Optional: an index built with
//! `--doc-tokens FILE` has them. Stored compactly: each distinct string once (a string table,
//! `doc_tokens.offsets` / `doc_tokens.bytes`) and one `u32` per token vector
//! (`doc_tokens.ids`, in the token vectors' row order).

use crate::error::{Error, Result};
use crate::format::array::ArrayFile;
use crate::format::manifest::Manifest;
use crate::format::strings::StringTable;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

/// File names.
pub mod files {
    /// Offsets of the distinct strings (`u64`, count + 1).
    pub const OFFSETS: &str = "doc_tokens.offsets";
    /// Their UTF-8 bytes.
    pub const BYTES: &str = "doc_tokens.bytes";
    /// One string id (`u32`) per token vector.
    pub const IDS: &str = "doc_tokens.ids";
}

/// Document token strings as read from a build input: the distinct strings in order of first
/// appearance, and one id into them per token vector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenStrings {
    /// Distinct strings.
    pub strings: Vec<String>,
    /// One id per token vector, documents in order.
    pub ids: Vec<u32>,
}

impl TokenStrings {
    /// Reads `path`: JSONL, one JSON array of strings per document (blank lines skipped), in
    /// document order, each as long as its document's token count (`lens`). Errors name the
    /// file and line.
    pub fn read_jsonl(path: &Path, lens: &[u64]) -> Result<TokenStrings> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut out = TokenStrings::default();
        let mut known: HashMap<String, u32> = HashMap::new();
        let mut doc = 0usize;
        for (i, line) in BufReader::new(file).lines().enumerate() {
            let location = || format!("{}:{}", path.display(), i + 1);
            let line = line.map_err(|e| Error::bad_input(location(), e.to_string()))?;
            if line.trim().is_empty() {
                continue;
            }
            let tokens: Vec<String> = serde_json::from_str(&line).map_err(|e| {
                Error::bad_input(location(), format!("not a JSON array of strings: {e}"))
            })?;
            let Some(&expected) = lens.get(doc) else {
                return Err(Error::bad_input(
                    location(),
                    format!("more lines than the {} documents", lens.len()),
                ));
            };
            if tokens.len() as u64 != expected {
                return Err(Error::bad_input(
                    location(),
                    format!(
                        "document {} has {expected} token vectors but {} token strings",
                        doc + 1,
                        tokens.len()
                    ),
                ));
            }
            for token in tokens {
                let next = known.len() as u32;
                let id = *known.entry(token).or_insert_with_key(|token| {
                    out.strings.push(token.clone());
                    next
                });
                out.ids.push(id);
            }
            doc += 1;
        }
        if doc != lens.len() {
            return Err(Error::bad_input(
                path.display().to_string(),
                format!("{doc} lines of token strings for {} documents", lens.len()),
            ));
        }
        Ok(out)
    }
}

/// An index's document token strings, opened.
pub struct DocTokenStrings {
    strings: StringTable,
    ids: ArrayFile<u32>,
}

impl DocTokenStrings {
    /// Opens them from `dir` when the manifest lists them (`None` otherwise), checking one id
    /// per token vector (`token_count`) and every id in range.
    pub fn open(dir: &Path, manifest: &Manifest, token_count: usize) -> Result<Option<Self>> {
        if !manifest.files.contains_key(files::IDS) {
            return Ok(None);
        }
        manifest.file(dir, files::OFFSETS)?;
        manifest.file(dir, files::BYTES)?;
        let offsets_path = dir.join(files::OFFSETS);
        let distinct = ArrayFile::<u64>::open(&offsets_path, files::OFFSETS)?
            .len()
            .saturating_sub(1);
        let strings = StringTable::open(
            &offsets_path,
            &dir.join(files::BYTES),
            "doc_tokens",
            distinct,
        )?;
        let ids_path = dir.join(files::IDS);
        let ids = ArrayFile::<u32>::open(&ids_path, files::IDS)?;
        if ids.len() != token_count {
            return Err(Error::corrupt(
                &ids_path,
                format!(
                    "{} token strings for {token_count} token vectors",
                    ids.len()
                ),
            ));
        }
        if let Some(bad) = ids.as_slice().iter().find(|&&id| id as usize >= distinct) {
            return Err(Error::corrupt(
                &ids_path,
                format!("string id {bad} past the {distinct} strings"),
            ));
        }
        Ok(Some(DocTokenStrings { strings, ids }))
    }

    /// The string of token vector `row` (a row of the build's input, as
    /// [`TokenStore::token_range`](crate::tokens::TokenStore::token_range) numbers them).
    pub fn get(&self, row: usize) -> Option<&str> {
        self.strings.get(*self.ids.as_slice().get(row)? as usize)
    }

    /// Each token vector's string id.
    pub fn ids(&self) -> &[u32] {
        self.ids.as_slice()
    }

    /// The distinct strings.
    pub fn strings(&self) -> impl Iterator<Item = &str> + '_ {
        self.strings.iter()
    }
}
