//! `manifest.json`: format version, counts, build parameters, and a checksum per file.

use crate::error::{Error, Result};
use crate::format::array::{checksum_file, WrittenFile};
use crate::format::FORMAT_VERSION;
use crate::params::{ApproxBuildParams, ApproxQueryParams};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// Size and checksum of one index file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// File size in bytes.
    pub bytes: u64,
    /// xxh3-64 of the whole file, 16 lowercase hex digits.
    pub xxh3: String,
}

impl From<WrittenFile> for FileEntry {
    fn from(written: WrittenFile) -> Self {
        FileEntry {
            bytes: written.bytes,
            xxh3: format!("{:016x}", written.xxh3),
        }
    }
}

/// Recomputes the checksum of each of `files` (names under `dir`) and compares it with its
/// entry; the first mismatch is an error naming the file. `parallel`: all files at once (on the
/// rayon pool), else one after the other. [`Error::Cancelled`] soon after `stop` is set.
pub fn verify_files(
    dir: &Path,
    files: &BTreeMap<String, FileEntry>,
    parallel: bool,
    stop: &AtomicBool,
) -> Result<()> {
    let check = |(name, entry): (&String, &FileEntry)| {
        let path = dir.join(name);
        let actual = checksum_file(&path, stop)?;
        let actual_hex = format!("{:016x}", actual.xxh3);
        if actual.bytes != entry.bytes || actual_hex != entry.xxh3 {
            return Err(Error::corrupt(
                &path,
                format!(
                    "checksum mismatch: {} bytes xxh3 {actual_hex}, the manifest says {} bytes xxh3 {}",
                    actual.bytes, entry.bytes, entry.xxh3
                ),
            ));
        }
        Ok(())
    };
    if parallel {
        files.par_iter().try_for_each(check)
    } else {
        files.iter().try_for_each(check)
    }
}

/// How the approximate first stage was built, and its query defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproxManifest {
    /// Build parameters.
    pub build: ApproxBuildParams,
    /// Knobs used when a query does not set them.
    pub query_defaults: ApproxQueryParams,
    /// Postings kept over all terms.
    pub pruned_postings: u64,
    /// How the query defaults were chosen, when calibrated at build time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
}

/// A build-time calibration of the approximate first stage: queries (made from the documents,
/// or a sample given at build) answered exactly and approximately (see `build::calibrate`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Queries answered.
    pub queries: usize,
    /// Where they came from: `documents` (pseudo-queries made from the indexed documents) or
    /// the name of the queries file given at build.
    #[serde(default)]
    pub source: String,
    /// The accuracy@10 asked for.
    pub target_accuracy: f32,
    /// The accuracy@10 the query defaults reached on the pseudo-queries.
    pub accuracy_at_10: f32,
    /// No setting tried reached the target, or exact search was faster: queries that do not
    /// choose a first stage use the exact one.
    pub exact_by_default: bool,
    /// Mean microseconds per calibration query at the recorded defaults (one thread, at build).
    #[serde(default)]
    pub mean_us: f32,
    /// Mean microseconds per calibration query of the exact first stage (likewise).
    #[serde(default)]
    pub exact_mean_us: f32,
}

/// The manifest of an index directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// On-disk format version ([`FORMAT_VERSION`] when written by this build).
    pub format_version: u32,
    /// The program and version that wrote the index.
    pub created_by: String,
    /// Seconds since the Unix epoch when the build finished.
    pub created_unix_s: u64,
    /// Number of documents.
    pub doc_count: u64,
    /// Number of vocabulary terms (valid term ids are `0..vocab_size`).
    pub vocab_size: u64,
    /// Token vectors over all documents.
    pub token_count: u64,
    /// Postings in the inverted index.
    pub posting_count: u64,
    /// Dimensions of a token vector.
    pub dim: u32,
    /// How token vectors are stored (`f16`).
    pub vector_codec: String,
    /// Inputs and options of the build, for provenance.
    pub build_parameters: BTreeMap<String, String>,
    /// The approximate first stage, when built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approx: Option<ApproxManifest>,
    /// Every other file of the directory with its size and checksum.
    pub files: BTreeMap<String, FileEntry>,
}

impl Manifest {
    /// Reads and parses `path`, refusing other format versions.
    pub fn read(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) {
            if value.pointer("/approx/blocks").is_some() {
                return Err(Error::corrupt(
                    path,
                    "built with the earlier approximate first stage (blocks and summaries), which this build no longer reads; rebuild the index",
                ));
            }
        }
        let manifest: Manifest = serde_json::from_str(&text)
            .map_err(|e| Error::corrupt(path, format!("unreadable manifest: {e}")))?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(Error::corrupt(
                path,
                format!(
                    "format version {}, this build reads version {FORMAT_VERSION}; rebuild the index",
                    manifest.format_version
                ),
            ));
        }
        Ok(manifest)
    }

    /// The entry of file `name`, or a corruption error if the manifest does not list it.
    pub fn file(&self, dir: &Path, name: &str) -> Result<&FileEntry> {
        self.files
            .get(name)
            .ok_or_else(|| Error::corrupt(dir, format!("manifest does not list `{name}`")))
    }
}
