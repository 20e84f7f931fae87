//! The one error type of the input readers.

use std::path::{Path, PathBuf};

/// A malformed or unreadable input file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input is malformed; `location` is `file:line` or `file: row N`.
    #[error("{location}: {message}")]
    BadInput {
        /// Where: the file and line (or row) of the first fault.
        location: String,
        /// What is wrong there.
        message: String,
    },
    /// Reading or writing the file failed. The message is the OS error's own; it is not also
    /// given as a `source`, so an error chain prints it once.
    #[error("{}: {message}", path.display())]
    Io {
        /// The file the operation was on.
        path: PathBuf,
        /// The OS error, described.
        message: String,
        /// Its kind (e.g. `NotFound`).
        kind: std::io::ErrorKind,
    },
}

/// The readers' result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::BadInput`] at `location`.
    pub fn bad_input(location: impl Into<String>, message: impl Into<String>) -> Self {
        Error::BadInput {
            location: location.into(),
            message: message.into(),
        }
    }

    /// An [`Error::Io`] on `path`; a missing file is said so in words.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        let message = match source.kind() {
            std::io::ErrorKind::NotFound => "does not exist".to_string(),
            _ => source.to_string(),
        };
        Error::Io {
            path: path.to_path_buf(),
            message,
            kind: source.kind(),
        }
    }
}
