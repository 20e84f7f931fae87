//! Deleted documents: a tombstone bitmap of internal ids kept beside the index files.
//!
//! Segment files are never modified after a build; deletes live in their own file,
//! `tombstones.roaring`, replaced as a whole on every delete: the new bitmap is written to a
//! temporary file, fsynced, renamed over the old one, and the directory fsynced, before the
//! in-memory set is swapped and the delete is acknowledged. A crash leaves either the old or the
//! new file, never a torn one. The file carries its own magic, format version, the document count
//! of the index it belongs to and an xxh3-64 checksum of the bitmap; anything else is refused at
//! load.
//!
//! Layout (little-endian): magic `TNDMTOMB` (8 bytes), version `u32`, reserved `u32` (0),
//! `doc_count` `u64`, payload length `u64`, payload xxh3-64 `u64`, then the payload: the bitmap
//! in the portable Roaring serialization.

use crate::error::{Error, Result};
use crate::format::staging::sync_path;
use roaring::RoaringBitmap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use xxhash_rust::xxh3::xxh3_64;

/// The tombstone file's name inside an index directory.
pub const FILE: &str = "tombstones.roaring";
/// Version of the tombstone file layout.
pub const VERSION: u32 = 1;
const MAGIC: &[u8; 8] = b"TNDMTOMB";
const HEADER_BYTES: usize = 40;

/// The deleted documents of one index: read at open, extended by [`Tombstones::delete`].
pub struct Tombstones {
    path: PathBuf,
    /// xxh3-64 of the directory's `manifest.json` when opened: a delete checks the directory
    /// still holds that index (not one rebuilt or compacted in its place) before writing.
    manifest: Option<u64>,
    doc_count: u32,
    current: RwLock<Arc<RoaringBitmap>>,
    /// One persist at a time (a delete reads, extends and writes the whole set).
    writing: Mutex<()>,
    /// Deletes were marked in memory ([`Tombstones::mark`]) since the file was last written.
    dirty: AtomicBool,
}

impl Tombstones {
    /// Reads the tombstones of the index at `dir` (none when the file does not exist).
    pub fn open(dir: &Path, doc_count: u32) -> Result<Tombstones> {
        let path = dir.join(FILE);
        let bitmap = match std::fs::read(&path) {
            Ok(bytes) => decode(&path, &bytes, doc_count)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => RoaringBitmap::new(),
            Err(e) => return Err(Error::io(&path, e)),
        };
        Ok(Tombstones {
            manifest: manifest_hash(dir),
            path,
            doc_count,
            current: RwLock::new(Arc::new(bitmap)),
            writing: Mutex::new(()),
            dirty: AtomicBool::new(false),
        })
    }

    /// The deleted documents now: a snapshot that later deletes do not change.
    pub fn current(&self) -> Arc<RoaringBitmap> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Number of deleted documents.
    pub fn len(&self) -> u64 {
        self.current().len()
    }

    /// Whether no document is deleted.
    pub fn is_empty(&self) -> bool {
        self.current().is_empty()
    }

    /// Marks `docs` deleted and persists the set before returning; returns how many were not
    /// deleted before. Concurrent calls are serialised. On error nothing changes (in memory or
    /// on disk).
    pub fn delete(&self, docs: impl IntoIterator<Item = u32>) -> Result<u64> {
        let _one_at_a_time = self
            .writing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let before = self.current();
        let mut next = (*before).clone();
        for doc in docs {
            if doc >= self.doc_count {
                return Err(Error::invalid(
                    "ids",
                    format!(
                        "document {doc} is past the index's {} documents",
                        self.doc_count
                    ),
                ));
            }
            next.insert(doc);
        }
        let added = next.len() - before.len();
        if added == 0 {
            return Ok(0);
        }
        let dir = self.path.parent().unwrap_or_else(|| Path::new("."));
        if manifest_hash(dir) != self.manifest {
            return Err(Error::Stale {
                path: dir.to_path_buf(),
                message: "the index directory was replaced (rebuilt or compacted) since this \
                          index was loaded; reload it before deleting"
                    .to_string(),
            });
        }
        write(&self.path, self.doc_count, &next)?;
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(next);
        Ok(added)
    }
}

impl Tombstones {
    /// Marks `docs` deleted in memory only (ids past the segment are ignored); returns how
    /// many were not deleted before. For a live writer, whose write-ahead log holds the deletes
    /// until [`Tombstones::persist`] writes them.
    pub fn mark(&self, docs: impl IntoIterator<Item = u32>) -> u64 {
        let _one_at_a_time = self
            .writing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let before = self.current();
        let mut next = (*before).clone();
        next.extend(docs.into_iter().filter(|&d| d < self.doc_count));
        let added = next.len() - before.len();
        if added > 0 {
            self.dirty.store(true, Ordering::Release);
            *self
                .current
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(next);
        }
        added
    }

    /// Writes the deletes [`Tombstones::mark`] made since the last write to the file
    /// (atomically, as [`Tombstones::delete`] does); nothing when there are none.
    pub fn persist(&self) -> Result<()> {
        let _one_at_a_time = self
            .writing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !self.dirty.load(Ordering::Acquire) {
            return Ok(());
        }
        write(&self.path, self.doc_count, &self.current())?;
        self.dirty.store(false, Ordering::Release);
        Ok(())
    }
}

/// xxh3-64 of `dir`'s manifest, if readable.
fn manifest_hash(dir: &Path) -> Option<u64> {
    std::fs::read(dir.join(crate::format::files::MANIFEST))
        .ok()
        .map(|bytes| xxh3_64(&bytes))
}

/// Encodes `bitmap` as a tombstone file for an index of `doc_count` documents.
pub fn encode(doc_count: u32, bitmap: &RoaringBitmap) -> Vec<u8> {
    let mut payload = Vec::with_capacity(bitmap.serialized_size());
    // Writing into a Vec cannot fail.
    let _ = bitmap.serialize_into(&mut payload);
    let mut bytes = Vec::with_capacity(HEADER_BYTES + payload.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(&u64::from(doc_count).to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&xxh3_64(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    bytes
}

/// Decodes and checks a tombstone file read from `path`.
pub fn decode(path: &Path, bytes: &[u8], doc_count: u32) -> Result<RoaringBitmap> {
    let corrupt = |message: String| Error::corrupt(path, message);
    if bytes.len() < HEADER_BYTES || &bytes[..8] != MAGIC {
        return Err(corrupt(
            "not a tombstone file (bad magic or too short)".into(),
        ));
    }
    let u32_at =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let version = u32_at(8);
    if version != VERSION {
        return Err(corrupt(format!(
            "tombstone format version {version}, this build reads version {VERSION}"
        )));
    }
    if u64_at(16) != u64::from(doc_count) {
        return Err(corrupt(format!(
            "written for an index of {} documents, this one has {doc_count}",
            u64_at(16)
        )));
    }
    let payload = &bytes[HEADER_BYTES..];
    if u64_at(24) != payload.len() as u64 {
        return Err(corrupt(format!(
            "{} payload bytes, the header says {}",
            payload.len(),
            u64_at(24)
        )));
    }
    if xxh3_64(payload) != u64_at(32) {
        return Err(corrupt("checksum mismatch".into()));
    }
    let bitmap = RoaringBitmap::deserialize_from(payload)
        .map_err(|e| corrupt(format!("unreadable bitmap: {e}")))?;
    if bitmap.max().is_some_and(|max| max >= doc_count) {
        return Err(corrupt(format!(
            "a deleted document is past the index's {doc_count} documents"
        )));
    }
    Ok(bitmap)
}

/// Writes `bitmap` to `path` atomically: a temporary file beside it, fsync, rename, fsync of
/// the directory.
pub fn write(path: &Path, doc_count: u32, bitmap: &RoaringBitmap) -> Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| FILE.to_string());
    let temp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temp).map_err(|e| Error::io(&temp, e))?;
        file.write_all(&encode(doc_count, bitmap))
            .map_err(|e| Error::io(&temp, e))?;
        file.sync_all().map_err(|e| Error::io(&temp, e))?;
        std::fs::rename(&temp, path).map_err(|e| Error::io(path, e))?;
        sync_path(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_index_directory_is_not_written_to() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("manifest.json");
        std::fs::write(&manifest, b"{\"doc_count\": 10}").unwrap();
        let tombstones = Tombstones::open(dir.path(), 10).unwrap();
        assert_eq!(tombstones.delete([1]).unwrap(), 1);
        std::fs::write(&manifest, b"{\"doc_count\": 9}").unwrap();
        let err = tombstones.delete([2]).unwrap_err();
        assert!(matches!(err, Error::Stale { .. }), "{err}");
        assert!(
            err.to_string().contains("reload it before deleting"),
            "{err}"
        );
        assert_eq!(tombstones.len(), 1);
        let on_disk = std::fs::read(dir.path().join(FILE)).unwrap();
        assert_eq!(decode(Path::new(FILE), &on_disk, 10).unwrap().len(), 1);
    }

    #[test]
    fn round_trips_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        let tombstones = Tombstones::open(dir.path(), 100).unwrap();
        assert!(tombstones.is_empty());
        assert_eq!(tombstones.delete([3, 7, 3]).unwrap(), 2);
        assert_eq!(tombstones.delete([7]).unwrap(), 0);
        assert!(tombstones.delete([100]).is_err());
        assert_eq!(tombstones.len(), 2);
        let reopened = Tombstones::open(dir.path(), 100).unwrap();
        assert_eq!(reopened.current().iter().collect::<Vec<_>>(), vec![3, 7]);

        let err = Tombstones::open(dir.path(), 50).err().unwrap().to_string();
        assert!(err.contains("index of 100 documents"), "{err}");
        let path = dir.path().join(FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = Tombstones::open(dir.path(), 100).err().unwrap().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
        std::fs::write(&path, b"short").unwrap();
        let err = Tombstones::open(dir.path(), 100).err().unwrap().to_string();
        assert!(err.contains("bad magic"), "{err}");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
