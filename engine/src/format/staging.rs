//! Builds an index in a hidden staging directory and commits it with a rename.

use crate::error::{Error, Result};
use crate::format::array::WrittenFile;
use crate::format::files;
use crate::format::manifest::{verify_files, FileEntry, Manifest};
use crate::format::segments::SegmentList;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// A directory being written. Dropping it without [`StagingDir::commit`] removes it, so a failed
/// build leaves nothing behind; a killed build leaves only a hidden `.NAME.building-PID`
/// directory without a manifest, which no server loads.
pub struct StagingDir {
    target: PathBuf,
    path: PathBuf,
    files: BTreeMap<String, FileEntry>,
    committed: bool,
}

impl StagingDir {
    /// Creates the staging directory for `target`, which must not exist yet unless `overwrite`.
    pub fn create(target: &Path, overwrite: bool) -> Result<StagingDir> {
        if target.exists() && !overwrite {
            return Err(Error::io(
                target,
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "output exists (pass --force to replace it)",
                ),
            ));
        }
        let name = target.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
            Error::io(
                target,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "output must name a directory",
                ),
            )
        })?;
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        let path = parent.join(format!(".{name}.building-{}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        }
        std::fs::create_dir(&path).map_err(|e| Error::io(&path, e))?;
        Ok(StagingDir {
            target: target.to_path_buf(),
            path,
            files: BTreeMap::new(),
            committed: false,
        })
    }

    /// The staging directory itself (its files can be opened before the commit).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where file `name` is to be written.
    pub fn file_path(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Records a finished file for the manifest.
    pub fn record(&mut self, name: &str, written: WrittenFile) {
        self.files.insert(name.to_string(), written.into());
    }

    /// Reads every recorded file back and checks it against the checksum computed as it was
    /// written (so that what a disk or a filesystem garbled is caught at build time, not when
    /// a server that skipped the checksum pass at start serves it), then writes the manifest
    /// (with the recorded files), fsyncs, and renames the directory onto the target (replacing
    /// an existing one).
    pub fn commit(mut self, mut manifest: Manifest) -> Result<PathBuf> {
        verify_files(&self.path, &self.files, true, &AtomicBool::new(false))?;
        manifest.files = std::mem::take(&mut self.files);
        let manifest_path = self.path.join(files::MANIFEST);
        let text = serde_json::to_string_pretty(&manifest)
            .map_err(|e| Error::corrupt(&manifest_path, e.to_string()))?;
        std::fs::write(&manifest_path, text).map_err(|e| Error::io(&manifest_path, e))?;
        sync_path(&manifest_path)?;
        self.rename_onto_target()
    }

    /// Commits a directory of segments: the segment subdirectories (each committed on its own,
    /// with its manifest) are listed in `list`, written as `segments.json`, and the directory
    /// is renamed onto the target like [`StagingDir::commit`].
    pub fn commit_segments(self, list: &SegmentList) -> Result<PathBuf> {
        if !self.files.is_empty() {
            return Err(Error::corrupt(
                &self.path,
                "a directory of segments holds no files of its own besides segments.json",
            ));
        }
        list.write(&self.path)?;
        self.rename_onto_target()
    }

    /// fsyncs the staging directory and renames it onto the target (replacing an existing
    /// one, which is put back if the rename fails), then fsyncs the target's parent.
    fn rename_onto_target(mut self) -> Result<PathBuf> {
        sync_path(&self.path)?;
        if self.target.exists() {
            let old = self
                .path
                .with_file_name(format!(".replaced-{}", std::process::id()));
            std::fs::rename(&self.target, &old).map_err(|e| Error::io(&self.target, e))?;
            if let Err(e) = std::fs::rename(&self.path, &self.target) {
                // Put the previous index back so a failed replacement loses nothing.
                let _ = std::fs::rename(&old, &self.target);
                return Err(Error::io(&self.target, e));
            }
            std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
        } else {
            std::fs::rename(&self.path, &self.target).map_err(|e| Error::io(&self.target, e))?;
        }
        if let Some(parent) = self.target.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_path(parent)?;
        }
        self.committed = true;
        Ok(self.target.clone())
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: a failed build should not leave its partial files around.
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// fsyncs a file or directory.
pub(crate) fn sync_path(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::array::write_array;
    use crate::format::FORMAT_VERSION;

    fn manifest() -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            created_by: "test".to_string(),
            created_unix_s: 0,
            doc_count: 0,
            vocab_size: 0,
            token_count: 0,
            posting_count: 0,
            dim: 1,
            vector_codec: "f16".to_string(),
            build_parameters: BTreeMap::new(),
            approx: None,
            files: BTreeMap::new(),
        }
    }

    #[test]
    fn a_file_changed_after_it_was_written_is_refused_at_commit() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("index");
        let mut staging = StagingDir::create(&target, false).unwrap();
        let path = staging.file_path("values");
        let written = write_array(&path, "values", &[1u32, 2, 3]).unwrap();
        staging.record("values", written);
        // One bit of the last element flips on its way to the disk.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let message = staging.commit(manifest()).unwrap_err().to_string();
        assert!(
            message.contains("values") && message.contains("checksum mismatch"),
            "{message}"
        );
        assert!(!target.exists(), "nothing published");
        let left = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(left, 0, "the staging directory is removed");

        let mut staging = StagingDir::create(&target, false).unwrap();
        let written = write_array(&staging.file_path("values"), "values", &[1u32, 2, 3]).unwrap();
        staging.record("values", written);
        staging.commit(manifest()).unwrap();
        assert!(target.join(files::MANIFEST).is_file());
    }
}
