//! The one mapping from engine errors to gRPC status codes.

use tandem_engine::Error;
use tonic::Status;

/// Maps an engine error to the status a client sees.
pub fn to_status(error: Error) -> Status {
    match error {
        Error::InvalidArgument { .. } | Error::BadInput { .. } => {
            Status::invalid_argument(error.to_string())
        }
        Error::Cancelled => Status::cancelled(error.to_string()),
        Error::Stale { .. } => Status::failed_precondition(error.to_string()),
        Error::Corrupt { .. } | Error::Io { .. } => {
            tracing::error!(%error, "index failure while serving");
            Status::internal(error.to_string())
        }
        Error::Encoder { .. } => {
            tracing::error!(%error, "query encoder failure");
            Status::internal(error.to_string())
        }
    }
}
