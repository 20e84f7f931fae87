//! Builds an index in a hidden staging directory and commits it with a rename.

use crate::error::{Error, Result};
use crate::format::array::WrittenFile;
use crate::format::files;
use crate::format::manifest::{FileEntry, Manifest};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

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

    /// Writes the manifest (with the recorded files), fsyncs, and renames the directory onto the
    /// target (replacing an existing one).
    pub fn commit(mut self, mut manifest: Manifest) -> Result<PathBuf> {
        manifest.files = std::mem::take(&mut self.files);
        let manifest_path = self.path.join(files::MANIFEST);
        let text = serde_json::to_string_pretty(&manifest)
            .map_err(|e| Error::corrupt(&manifest_path, e.to_string()))?;
        std::fs::write(&manifest_path, text).map_err(|e| Error::io(&manifest_path, e))?;
        sync_path(&manifest_path)?;
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
