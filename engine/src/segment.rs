//! A loaded index: the manifest, vocabulary, external ids, inverted index and token store.

use crate::approx::ApproxIndex;
use crate::attributes::{self, Attributes};
use crate::doc_tokens::DocTokenStrings;
use crate::error::{Error, Result};
use crate::format::array::ArrayFile;
use crate::format::manifest::{verify_files, Manifest};
use crate::format::{files, strings::StringTable};
use crate::params::FirstStage;
use crate::sparse::InvertedIndex;
use crate::tokens::{Codec, TokenStore};
use crate::tombstones::Tombstones;
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// How much [`Segment::open`] checks before serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Recompute every file's checksum (reads every byte) and check every invariant. The default.
    Full,
    /// Check headers, sizes and invariants but not checksums: the open reads the small files
    /// and the invariants' arrays, not the token vectors. [`Segment::verify_checksums`] can run
    /// the checksum pass later (the server does, in the background).
    SkipChecksums,
}

/// An open, validated index. Its files are immutable; only its set of deleted documents grows
/// ([`Segment::delete`]). Share it behind an `Arc` across threads.
pub struct Segment {
    dir: PathBuf,
    manifest: Manifest,
    vocab: StringTable,
    term_ids: HashMap<String, u32>,
    doc_ids: StringTable,
    postings: InvertedIndex,
    approx: Option<ApproxIndex>,
    tokens: TokenStore,
    /// Internal ids ordered by external id, to resolve external ids by binary search.
    by_external_id: Vec<u32>,
    attributes: Option<Attributes>,
    doc_token_strings: Option<DocTokenStrings>,
    tombstones: Tombstones,
}

/// What a delete did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteOutcome {
    /// Documents newly deleted.
    pub deleted: u64,
    /// Documents given that were deleted before.
    pub already_deleted: u64,
    /// Ids the index does not have (each once, in the order given).
    pub unknown: Vec<String>,
}

impl Segment {
    /// Recomputes the checksum of every file of the index, one file after the other (to leave
    /// the other cores to queries when run in the background), and compares them with the
    /// manifest; the first mismatch is an error naming the file. Reads every byte, so it can
    /// take minutes on a large index: it stops with [`Error::Cancelled`] soon after `stop` is
    /// set (within 16 MiB of reading).
    pub fn verify_checksums(&self, stop: &AtomicBool) -> Result<()> {
        verify_files(&self.dir, &self.manifest.files, false, stop)
    }

    /// Opens the index at `dir`, verifying checksums and invariants; a corrupt or incomplete
    /// index is refused with an error naming the file and the failed check.
    pub fn open(dir: &Path) -> Result<Segment> {
        Segment::open_with(dir, Verify::Full)
    }

    /// Opens the index at `dir` with the given level of verification.
    pub fn open_with(dir: &Path, verify: Verify) -> Result<Segment> {
        check_directory(dir)?;
        let manifest_path = dir.join(files::MANIFEST);
        if !manifest_path.exists() {
            if dir.join(crate::format::segments::FILE).exists() {
                return Err(Error::invalid(
                    "index",
                    format!(
                        "{} is a list of segments (segments.json), and this needs a single segment: `tandem-index compact` merges them into one",
                        dir.display()
                    ),
                ));
            }
            return Err(Error::corrupt(
                dir,
                "no manifest.json: not an index directory, or a build that did not finish",
            ));
        }
        let manifest = Manifest::read(&manifest_path)?;
        if verify == Verify::Full {
            verify_files(dir, &manifest.files, true, &AtomicBool::new(false))?;
        } else {
            for (name, entry) in &manifest.files {
                let path = dir.join(name);
                let len = std::fs::metadata(&path)
                    .map_err(|e| Error::io(&path, e))?
                    .len();
                if len != entry.bytes {
                    return Err(Error::corrupt(
                        &path,
                        format!("{len} bytes, the manifest says {}", entry.bytes),
                    ));
                }
            }
        }
        let count = |value: u64, what: &str| {
            usize::try_from(value)
                .map_err(|_| Error::corrupt(&manifest_path, format!("{what} {value} is too large")))
        };
        let doc_count = count(manifest.doc_count, "doc_count")?;
        let vocab_size = count(manifest.vocab_size, "vocab_size")?;
        let token_count = count(manifest.token_count, "token_count")?;
        let dim = manifest.dim as usize;
        if dim == 0 || vocab_size > u32::MAX as usize || doc_count > u32::MAX as usize {
            return Err(Error::corrupt(
                &manifest_path,
                "dim must be > 0 and vocab_size, doc_count must fit in 32 bits",
            ));
        }
        let codec = Codec::from_name(&manifest.vector_codec).ok_or_else(|| {
            Error::corrupt(
                &manifest_path,
                format!("vector codec `{}` is not supported", manifest.vector_codec),
            )
        })?;
        for name in [
            files::VOCAB_OFFSETS,
            files::VOCAB_BYTES,
            files::IDS_OFFSETS,
            files::IDS_BYTES,
            files::POSTINGS_OFFSETS,
            files::POSTINGS_DOCS,
            files::POSTINGS_WEIGHTS,
            files::TOKENS_OFFSETS,
            files::TOKENS_PADDED,
        ] {
            manifest.file(dir, name)?;
        }
        let vocab = StringTable::open(
            &dir.join(files::VOCAB_OFFSETS),
            &dir.join(files::VOCAB_BYTES),
            "vocab",
            vocab_size,
        )?;
        let mut term_ids = HashMap::with_capacity(vocab_size);
        for (id, term) in vocab.iter().enumerate() {
            if term_ids.insert(term.to_string(), id as u32).is_some() {
                return Err(Error::corrupt(
                    dir.join(files::VOCAB_BYTES),
                    format!("term {term:?} appears twice"),
                ));
            }
        }
        let doc_ids = StringTable::open(
            &dir.join(files::IDS_OFFSETS),
            &dir.join(files::IDS_BYTES),
            "ids",
            doc_count,
        )?;
        let postings = InvertedIndex::open(dir, vocab_size, doc_count)?;
        if postings.posting_count() as u64 != manifest.posting_count {
            return Err(Error::corrupt(
                dir.join(files::POSTINGS_DOCS),
                format!(
                    "{} postings, the manifest says {}",
                    postings.posting_count(),
                    manifest.posting_count
                ),
            ));
        }
        let approx = match &manifest.approx {
            Some(a) => {
                let clusters = a.build.cluster_size > 0;
                for name in crate::approx::files::ALL {
                    manifest.file(dir, name)?;
                }
                if clusters {
                    for name in crate::approx::files::CLUSTERS {
                        manifest.file(dir, name)?;
                    }
                }
                Some(ApproxIndex::open(dir, vocab_size, doc_count, &a.build)?)
            }
            None => None,
        };
        let codec_files: &[&str] = match codec {
            Codec::F16 => &[files::TOKENS_PACKED],
            Codec::Int8 => &[files::TOKENS_INT8, files::TOKENS_SCALES],
            Codec::Pq => &[
                files::PQ_CODES,
                files::PQ_SCALES,
                files::PQ_SUBSPACES,
                files::PQ_CODEBOOK,
            ],
        };
        for name in codec_files {
            manifest.file(dir, name)?;
        }
        let tokens = TokenStore::open(dir, codec, doc_count, token_count, dim)?;
        let mut by_external_id: Vec<u32> = (0..doc_count as u32).collect();
        by_external_id
            .par_sort_unstable_by(|&a, &b| doc_ids.get(a as usize).cmp(&doc_ids.get(b as usize)));
        if let Some(w) = by_external_id
            .windows(2)
            .find(|w| doc_ids.get(w[0] as usize) == doc_ids.get(w[1] as usize))
        {
            return Err(Error::corrupt(
                dir.join(files::IDS_BYTES),
                format!(
                    "document id {:?} appears twice",
                    doc_ids.get(w[0] as usize).unwrap_or_default()
                ),
            ));
        }
        // Attributes are optional (indexes built without them, or before them, have none); when
        // present the manifest lists the file, so its size and checksum were verified above.
        let attributes = match manifest.files.get(attributes::FILE) {
            Some(_) => {
                let path = dir.join(attributes::FILE);
                let bytes = ArrayFile::<u8>::open(&path, attributes::FILE)?;
                Some(Attributes::decode(
                    &path,
                    bytes.as_slice(),
                    doc_count as u32,
                )?)
            }
            None => None,
        };
        let doc_token_strings = DocTokenStrings::open(dir, &manifest, token_count)?;
        let tombstones = Tombstones::open(dir, doc_count as u32)?;
        Ok(Segment {
            dir: dir.to_path_buf(),
            manifest,
            vocab,
            term_ids,
            doc_ids,
            postings,
            approx,
            tokens,
            by_external_id,
            attributes,
            doc_token_strings,
            tombstones,
        })
    }

    /// The index's document token strings, when it was built with them.
    pub fn doc_token_strings(&self) -> Option<&DocTokenStrings> {
        self.doc_token_strings.as_ref()
    }

    /// The string of token `position` of document `doc`, when the index stores them and both
    /// are in range.
    pub fn doc_token_text(&self, doc: u32, position: u32) -> Option<&str> {
        let range = self.tokens.token_range(doc)?;
        let row = range.start.checked_add(position as usize)?;
        if row >= range.end {
            return None;
        }
        self.doc_token_strings.as_ref()?.get(row)
    }

    /// The directory the index was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Number of documents.
    pub fn doc_count(&self) -> usize {
        self.doc_ids.len()
    }

    /// Number of vocabulary terms.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// Dimensions per token vector.
    pub fn dim(&self) -> usize {
        self.tokens.dim()
    }

    /// The vocabulary term with id `term`.
    pub fn term(&self, term: u32) -> Option<&str> {
        self.vocab.get(term as usize)
    }

    /// The id of a vocabulary term.
    pub fn term_id(&self, term: &str) -> Option<u32> {
        self.term_ids.get(term).copied()
    }

    /// Resolves `(token, weight)` pairs through the vocabulary: the known ones as
    /// `(term id, weight)` sorted by term id (a fixed order keeps sums reproducible), and the
    /// number of unknown tokens (dropped).
    pub fn resolve_terms<'t>(
        &self,
        terms: impl IntoIterator<Item = (&'t str, f32)>,
    ) -> (Vec<(u32, f32)>, usize) {
        let mut unknown = 0;
        let mut resolved: Vec<(u32, f32)> = terms
            .into_iter()
            .filter_map(|(token, weight)| {
                let id = self.term_id(token);
                unknown += usize::from(id.is_none());
                id.map(|id| (id, weight))
            })
            .collect();
        resolved.sort_unstable_by_key(|t| t.0);
        (resolved, unknown)
    }

    /// The external id of internal document `doc`.
    pub fn external_id(&self, doc: u32) -> Option<&str> {
        self.doc_ids.get(doc as usize)
    }

    /// The internal id of the document with external id `id`.
    pub fn doc_by_id(&self, id: &str) -> Option<u32> {
        self.by_external_id
            .binary_search_by(|&doc| self.doc_ids.get(doc as usize).unwrap_or_default().cmp(id))
            .ok()
            .map(|at| self.by_external_id[at])
    }

    /// The document attributes, when the index has any.
    pub fn attributes(&self) -> Option<&Attributes> {
        self.attributes.as_ref()
    }

    /// The deleted documents.
    pub fn tombstones(&self) -> &Tombstones {
        &self.tombstones
    }

    /// Number of documents not deleted.
    pub fn live_count(&self) -> u64 {
        (self.doc_count() as u64).saturating_sub(self.tombstones.len())
    }

    /// Deletes the documents with external ids `ids`: the tombstone file is rewritten (new file,
    /// fsync, rename) before this returns, and queries that start afterwards never return them.
    /// Ids the index does not have are reported, not an error. Concurrent deletes are serialised.
    pub fn delete<S: AsRef<str>>(&self, ids: &[S]) -> Result<DeleteOutcome> {
        let mut docs = Vec::with_capacity(ids.len());
        let mut unknown: Vec<String> = Vec::new();
        // Each unknown id once, in the order of its first appearance, in time linear in `ids`.
        let mut seen_unknown: HashSet<&str> = HashSet::new();
        for id in ids {
            let id = id.as_ref();
            match self.doc_by_id(id) {
                Some(doc) => docs.push(doc),
                None if seen_unknown.insert(id) => unknown.push(id.to_string()),
                None => {}
            }
        }
        docs.sort_unstable();
        docs.dedup();
        let given = docs.len() as u64;
        let deleted = self.tombstones.delete(docs)?;
        Ok(DeleteOutcome {
            deleted,
            already_deleted: given - deleted,
            unknown,
        })
    }

    /// The inverted index.
    pub fn postings(&self) -> &InvertedIndex {
        &self.postings
    }

    /// The approximate first stage, when the index has one.
    pub fn approx(&self) -> Option<&ApproxIndex> {
        self.approx.as_ref()
    }

    /// The first stage a query uses when it does not choose: the approximate one with the
    /// index's defaults when built, unless its calibration found no setting accurate enough;
    /// else exact.
    pub fn default_first_stage(&self) -> FirstStage {
        match &self.manifest.approx {
            Some(a) if !a.calibration.as_ref().is_some_and(|c| c.exact_by_default) => {
                FirstStage::Approx(a.query_defaults)
            }
            _ => FirstStage::Exact,
        }
    }

    /// The token-vector store.
    pub fn tokens(&self) -> &TokenStore {
        &self.tokens
    }

    /// Bytes of all files of the index (as listed in the manifest).
    pub fn size_bytes(&self) -> u64 {
        self.manifest.files.values().map(|f| f.bytes).sum()
    }

    /// For each file of the index (by name, as in the manifest), how many of its bytes are in
    /// the page cache now (`mincore` over a fresh read-only mapping, which reads nothing); 0 for
    /// a file that cannot be opened. For telling, with an index larger than memory, which files
    /// stay resident and which are read from the disk.
    pub fn resident_bytes_by_file(&self) -> Vec<(&str, usize)> {
        self.manifest
            .files
            .iter()
            .map(|(name, entry)| {
                let path = self.dir.join(name);
                let resident = (entry.bytes > 0)
                    .then(|| std::fs::File::open(&path).ok())
                    .flatten()
                    .and_then(|file| crate::mmap::map_file(&file, &path).ok())
                    .map_or(0, |map| crate::mmap::resident_bytes(&map));
                (name.as_str(), resident)
            })
            .collect()
    }
}

/// Refuses a `dir` that does not exist or is not a directory with an [`Error::Io`] saying so
/// (a wrong path, not a corrupt index); a directory without a manifest is left to the caller.
fn check_directory(dir: &Path) -> Result<()> {
    use std::io::{Error as IoError, ErrorKind};
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(Error::io(
            dir,
            IoError::new(
                ErrorKind::NotADirectory,
                "is not a directory (an index is a directory)",
            ),
        )),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::io(
            dir,
            IoError::new(ErrorKind::NotFound, "the index directory does not exist"),
        )),
        Err(e) => Err(Error::io(dir, e)),
    }
}
