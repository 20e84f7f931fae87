//! Read-only memory maps of index files: the one place the engine creates a mapping.

use crate::error::{Error, Result};
use memmap2::{Mmap, MmapOptions};
use std::fs::File;
use std::path::Path;

/// Maps `file` (opened from `path`) read-only.
pub fn map_file(file: &File, path: &Path) -> Result<Mmap> {
    // SAFETY: memmap2 requires that the file is not modified or truncated while mapped, or reads
    // through the mapping may see changed bytes or fault. Index directories are immutable once
    // committed: builds write a new staging directory and rename it into place, and nothing in
    // tandem writes to a committed index file. A user who edits index files under a running
    // server breaks that contract (documented in ARCHITECTURE.md).
    unsafe { MmapOptions::new().map(file) }.map_err(|e| Error::io(path, e))
}
