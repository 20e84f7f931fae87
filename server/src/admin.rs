//! The `tandem.v1.Admin` service: hot reload of the served index, and deletes.

use crate::service::index_info;
use crate::state::Shared;
use crate::status::to_status;
use std::path::PathBuf;
use std::sync::Arc;
use tandem_proto::v1::admin_server::Admin;
use tandem_proto::v1::{DeleteRequest, DeleteResponse, ReloadIndexRequest, ReloadIndexResponse};
use tonic::{Request, Response, Status};

/// Swaps newly built indexes in and deletes documents.
pub struct AdminService {
    shared: Arc<Shared>,
}

impl AdminService {
    /// The admin service over `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        AdminService { shared }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn reload_index(
        &self,
        request: Request<ReloadIndexRequest>,
    ) -> Result<Response<ReloadIndexResponse>, Status> {
        let path = request.into_inner().path;
        let dir = (!path.is_empty()).then(|| PathBuf::from(path));
        let result = reload(&self.shared, dir).await;
        let code = result
            .as_ref()
            .map_or_else(Status::code, |_| tonic::Code::Ok);
        self.shared.metrics.count("ReloadIndex", code);
        result.map(Response::new)
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let ids = request.into_inner().ids;
        let requested = ids.len();
        let result = match self.shared.delete(ids).await {
            Ok((outcome, served)) => {
                tracing::info!(
                    index = %served.index.dir().display(),
                    requested,
                    deleted = outcome.deleted,
                    already_deleted = outcome.already_deleted,
                    unknown = outcome.unknown.len(),
                    "documents deleted"
                );
                let deleted_count = served.index.tombstones().len();
                Ok(DeleteResponse {
                    deleted: outcome.deleted,
                    already_deleted: outcome.already_deleted,
                    unknown_ids: outcome.unknown,
                    live_count: served.index.doc_count() as u64 - deleted_count,
                    deleted_count,
                })
            }
            Err(e) => Err(to_status(e)),
        };
        let code = result
            .as_ref()
            .map_or_else(Status::code, |_| tonic::Code::Ok);
        self.shared.metrics.count("Delete", code);
        result.map(Response::new)
    }
}

/// Reloads (see [`Shared::reload`]) and logs the outcome; a failure keeps the old index and is
/// FAILED_PRECONDITION naming the reason.
pub async fn reload(shared: &Shared, dir: Option<PathBuf>) -> Result<ReloadIndexResponse, Status> {
    match shared.reload(dir).await {
        Ok((served, load_ms)) => {
            tracing::info!(
                index = %served.index.dir().display(),
                docs = served.index.doc_count(),
                load_ms,
                "index reloaded"
            );
            Ok(ReloadIndexResponse {
                info: Some(index_info(shared, &served)),
                load_ms: u64::try_from(load_ms).unwrap_or(u64::MAX),
            })
        }
        Err(e) => {
            tracing::warn!(error = %e, "index reload failed; the previous index keeps serving");
            Err(Status::failed_precondition(format!(
                "reload failed, the previous index keeps serving: {e}"
            )))
        }
    }
}
