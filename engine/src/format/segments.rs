//! `segments.json`: the list of an index's segments.
//!
//! An index directory is either a single segment (its `manifest.json` at the top, as every
//! batch build before segments wrote it) or a list of segments: `segments.json` naming, in
//! order, subdirectories that are each a complete segment with its own manifest. The list is
//! small and replaced atomically (temporary file, fsync, rename, directory fsync), so a reader
//! sees either the old list or the new one; it carries the format version and an xxh3-64
//! checksum of its entries, so a damaged list is refused rather than half-read.

use crate::error::{Error, Result};
use crate::format::staging::sync_path;
use crate::format::FORMAT_VERSION;
use crate::params::{ApproxBuildParams, ApproxQueryParams};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use xxhash_rust::xxh3::xxh3_64;

/// The file name of the segment list.
pub const FILE: &str = "segments.json";

/// One segment of the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentEntry {
    /// The segment's directory, a plain name inside the index directory.
    pub name: String,
    /// Its documents (deleted ones included), as its manifest says; checked at open.
    pub doc_count: u64,
}

/// The parsed `segments.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentList {
    /// On-disk format version ([`FORMAT_VERSION`] when written by this build).
    pub format_version: u32,
    /// The segments in order: document ids of the index follow this order.
    pub segments: Vec<SegmentEntry>,
    /// What live writes need to know besides the segments (absent in batch builds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writes: Option<WriteState>,
    /// xxh3-64 of the entries and the write state (their JSON), 16 lowercase hex digits.
    pub xxh3: String,
}

/// The state of live writes the segment list records (see `crate::live`).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteState {
    /// Every write of the write-ahead log with a sequence number up to this one is held by the
    /// listed segments and their tombstones; recovery replays the writes after it.
    pub sealed_seq: u64,
    /// The vocabulary is fixed: documents with other terms are refused (else it grows).
    pub fixed_vocab: bool,
    /// The number the next segment a writer creates takes in its name.
    pub next_segment: u64,
    /// The approximate first stage sealed and merged segments get (`None`: exact only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_stage: Option<SealStage>,
}

/// How a writer builds the approximate first stage of the segments it seals and merges.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealStage {
    /// Build parameters.
    pub build: ApproxBuildParams,
    /// Query defaults.
    pub query_defaults: ApproxQueryParams,
}

impl SegmentList {
    /// A list of `segments`, with its checksum.
    pub fn new(segments: Vec<SegmentEntry>) -> SegmentList {
        SegmentList::with_writes(segments, None)
    }

    /// A list of `segments` with the state of live writes, and its checksum.
    pub fn with_writes(segments: Vec<SegmentEntry>, writes: Option<WriteState>) -> SegmentList {
        let xxh3 = entries_checksum(&segments, writes.as_ref());
        SegmentList {
            format_version: FORMAT_VERSION,
            segments,
            writes,
            xxh3,
        }
    }

    /// Reads and checks `path`: version, checksum, and names that are plain, distinct
    /// directory names (no path separators, not hidden).
    pub fn read(path: &Path) -> Result<SegmentList> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let list: SegmentList = serde_json::from_str(&text)
            .map_err(|e| Error::corrupt(path, format!("unreadable segment list: {e}")))?;
        if list.format_version != FORMAT_VERSION {
            return Err(Error::corrupt(
                path,
                format!(
                    "format version {} is not supported (this build reads {FORMAT_VERSION})",
                    list.format_version
                ),
            ));
        }
        let expected = entries_checksum(&list.segments, list.writes.as_ref());
        if expected != list.xxh3 {
            return Err(Error::corrupt(
                path,
                format!(
                    "checksum mismatch: the entries hash to {expected}, the file says {}",
                    list.xxh3
                ),
            ));
        }
        if list.segments.is_empty() {
            return Err(Error::corrupt(path, "lists no segment"));
        }
        let mut names = std::collections::HashSet::new();
        for entry in &list.segments {
            check_name(&entry.name).map_err(|message| Error::corrupt(path, message))?;
            if !names.insert(entry.name.as_str()) {
                return Err(Error::corrupt(
                    path,
                    format!("segment {:?} is listed twice", entry.name),
                ));
            }
        }
        Ok(list)
    }

    /// Writes the list into `dir` atomically: a temporary file beside it, fsync, rename, fsync
    /// of the directory.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(FILE);
        let temp = dir.join(format!(".{FILE}.tmp-{}", std::process::id()));
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::corrupt(&path, format!("cannot encode the segment list: {e}")))?;
        let result = (|| {
            let mut file = std::fs::File::create(&temp).map_err(|e| Error::io(&temp, e))?;
            file.write_all(text.as_bytes())
                .map_err(|e| Error::io(&temp, e))?;
            file.sync_all().map_err(|e| Error::io(&temp, e))?;
            std::fs::rename(&temp, &path).map_err(|e| Error::io(&path, e))?;
            sync_path(dir)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result
    }
}

/// The name of the `n`-th segment a build or a writer creates (zero-padded, so names sort in
/// creation order).
pub fn segment_name(n: u64) -> String {
    format!("seg-{n:06}")
}

fn entries_checksum(entries: &[SegmentEntry], writes: Option<&WriteState>) -> String {
    // Serialising plain structs cannot fail; an empty string would fail the check.
    let mut json = serde_json::to_string(entries).unwrap_or_default();
    if let Some(writes) = writes {
        json.push_str(&serde_json::to_string(writes).unwrap_or_default());
    }
    format!("{:016x}", xxh3_64(json.as_bytes()))
}

fn check_name(name: &str) -> std::result::Result<(), String> {
    let plain =
        !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\']) && name != "..";
    if plain {
        Ok(())
    } else {
        Err(format!(
            "segment name {name:?} is not a plain directory name"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, doc_count: u64) -> SegmentEntry {
        SegmentEntry {
            name: name.to_string(),
            doc_count,
        }
    }

    #[test]
    fn round_trips_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        let list = SegmentList::new(vec![entry("seg-000000", 5), entry("seg-000001", 3)]);
        list.write(dir.path()).unwrap();
        assert_eq!(SegmentList::read(&dir.path().join(FILE)).unwrap(), list);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from(FILE)]);

        let path = dir.path().join(FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("\"doc_count\": 3", "\"doc_count\": 4")).unwrap();
        let err = SegmentList::read(&path).unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");

        for bad in ["../x", ".hidden", "a/b", ""] {
            SegmentList::new(vec![entry(bad, 1)])
                .write(dir.path())
                .unwrap();
            let err = SegmentList::read(&path).unwrap_err().to_string();
            assert!(err.contains("not a plain directory name"), "{bad}: {err}");
        }
        SegmentList::new(vec![entry("a", 1), entry("a", 2)])
            .write(dir.path())
            .unwrap();
        let err = SegmentList::read(&path).unwrap_err().to_string();
        assert!(err.contains("listed twice"), "{err}");
        SegmentList::new(vec![]).write(dir.path()).unwrap();
        let err = SegmentList::read(&path).unwrap_err().to_string();
        assert!(err.contains("lists no segment"), "{err}");
    }
}
