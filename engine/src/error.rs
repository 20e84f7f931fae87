//! The engine's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the engine. Front ends map each variant once (the server to a
/// gRPC status, the CLIs to a message and exit code).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A query or its parameters are invalid; `field` names the offending field.
    #[error("{field}: {message}")]
    InvalidArgument {
        /// The field path, e.g. `query.vectors.dim`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// Input of an index build (a file the user gave) is malformed; `location` is `file:line` or
    /// `file: row N`.
    #[error("{location}: {message}")]
    BadInput {
        /// Where: the file and line (or row) of the first fault.
        location: String,
        /// What is wrong there.
        message: String,
    },
    /// An index file is missing, corrupt, or of another format version.
    #[error("corrupt index {}: {message}", path.display())]
    Corrupt {
        /// The file (or directory) at fault.
        path: PathBuf,
        /// What check failed.
        message: String,
    },
    /// The index directory changed on disk since it was loaded (rebuilt or compacted in place):
    /// writing to it (a delete) would be wrong; reload first.
    #[error("{}: {message}", path.display())]
    Stale {
        /// The index directory.
        path: PathBuf,
        /// What changed and what to do.
        message: String,
    },
    /// A query was abandoned because its caller stopped waiting (deadline passed, client gone).
    #[error("the query was cancelled")]
    Cancelled,
    /// A query encoder failed while running (a model that loaded but cannot run, not a bad
    /// query).
    #[error("encoder {}: {message}", model.display())]
    Encoder {
        /// The model directory (or table file) of the encoder.
        model: PathBuf,
        /// What failed.
        message: String,
    },
    /// An I/O operation failed. The OS error is part of the message, not a `source`, so an
    /// error chain prints it once.
    #[error("{}: {}", path.display(), describe_io(error))]
    Io {
        /// The file the operation was on.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::InvalidArgument`] for `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    /// An [`Error::BadInput`] at `location`.
    pub fn bad_input(location: impl Into<String>, message: impl Into<String>) -> Self {
        Error::BadInput {
            location: location.into(),
            message: message.into(),
        }
    }

    /// An [`Error::Corrupt`] for `path`.
    pub fn corrupt(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error,
        }
    }

    /// Prefixes the field path of an [`Error::InvalidArgument`] (e.g. with `requests[3].`);
    /// other variants are returned unchanged.
    pub fn within(self, prefix: &str) -> Self {
        match self {
            Error::InvalidArgument { field, message } => Error::InvalidArgument {
                field: format!("{prefix}{field}"),
                message,
            },
            other => other,
        }
    }
}

/// An I/O error in words: the OS's missing file "does not exist", others as they say.
fn describe_io(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound if error.raw_os_error().is_some() => {
            "does not exist".to_string()
        }
        _ => error.to_string(),
    }
}

impl From<tandem_data::Error> for Error {
    fn from(error: tandem_data::Error) -> Self {
        match error {
            tandem_data::Error::BadInput { location, message } => {
                Error::BadInput { location, message }
            }
            tandem_data::Error::Io {
                path,
                message,
                kind,
            } => Error::Io {
                path,
                error: std::io::Error::new(kind, message),
            },
        }
    }
}
