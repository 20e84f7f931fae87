//! The `tandem.v1.Admin` service: hot reload of the served index, and deletes.
//!
//! Admin calls change what every client sees, so they are guarded apart from search (admin
//! tokens, see [`crate::auth`]), may be served on their own listener (`--admin-listen`; the main
//! listener then answers them with [`Elsewhere`]), and are bounded: a reload loads only
//! directories under the index root ([`IndexRoot`]), a delete takes at most `max_delete_ids`
//! ids.

use crate::service::index_info;
use crate::state::Shared;
use crate::status::to_status;
use crate::writes;
use anyhow::Context;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use tandem_proto::v1::admin_server::Admin;
use tandem_proto::v1::{
    DeleteRequest, DeleteResponse, ReloadIndexRequest, ReloadIndexResponse, UpsertRequest,
    UpsertResponse,
};
use tonic::{Request, Response, Status, Streaming};

/// The directory ReloadIndex may load from: a path must name a directory under it, and still
/// be under it once `..` and symlinks are resolved.
#[derive(Debug, Clone)]
pub struct IndexRoot {
    /// The root as configured, made absolute (`..` and `.` removed, symlinks kept); relative
    /// request paths are taken from it.
    given: PathBuf,
    /// The root with every symlink resolved.
    real: PathBuf,
}

impl IndexRoot {
    /// The root `root` (`--index-root`), or without one the parent directory of `served` (the
    /// index served at start, symlinks resolved). `served` must lie under the root.
    pub fn new(root: Option<&Path>, served: &Path) -> anyhow::Result<IndexRoot> {
        let served_real = served
            .canonicalize()
            .with_context(|| format!("cannot resolve the index directory {}", served.display()))?;
        let given = match root {
            Some(root) => std::path::absolute(root)
                .map(|p| lexically_clean(&p))
                .with_context(|| format!("--index-root {}: cannot resolve it", root.display()))?,
            None => served_real.parent().unwrap_or(&served_real).to_path_buf(),
        };
        let real = given
            .canonicalize()
            .with_context(|| format!("--index-root {}: cannot resolve it", given.display()))?;
        anyhow::ensure!(
            real.is_dir(),
            "--index-root {}: not a directory",
            given.display()
        );
        anyhow::ensure!(
            served_real.starts_with(&real),
            "the index {} is not under --index-root {}: the index served at start must be",
            served.display(),
            real.display()
        );
        Ok(IndexRoot { given, real })
    }

    /// The root, symlinks resolved.
    pub fn path(&self) -> &Path {
        &self.real
    }

    /// The directory `requested` names (a relative path is taken from the root), symlinks
    /// resolved, when it lies under the root; else PERMISSION_DENIED naming the field `path`.
    /// A path outside the root is refused before the filesystem is consulted, so the answer
    /// does not tell what exists outside it.
    pub fn resolve(&self, requested: &str) -> Result<PathBuf, Status> {
        let outside = || {
            Status::permission_denied(format!(
                "path: {requested:?} is outside the index root {} (--index-root): ReloadIndex \
                 loads only directories under it",
                self.real.display()
            ))
        };
        let lexical = lexically_clean(&self.given.join(requested));
        if !(lexical.starts_with(&self.given) || lexical.starts_with(&self.real)) {
            return Err(outside());
        }
        let real = lexical.canonicalize().map_err(|e| {
            Status::failed_precondition(format!(
                "reload failed, the previous index keeps serving: path: cannot resolve \
                 {requested:?}: {e}"
            ))
        })?;
        if !real.starts_with(&self.real) {
            return Err(outside());
        }
        Ok(real)
    }
}

/// `path` with `.` dropped and each `..` removing the component before it (at the root it
/// stays the root), without consulting the filesystem.
fn lexically_clean(path: &Path) -> PathBuf {
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                clean.pop();
            }
            other => clean.push(other),
        }
    }
    clean
}

/// Swaps newly built indexes in and deletes documents.
pub struct AdminService {
    shared: Arc<Shared>,
    root: IndexRoot,
}

impl AdminService {
    /// The admin service over `shared`, reloading from under `root`.
    pub fn new(shared: Arc<Shared>, root: IndexRoot) -> Self {
        AdminService { shared, root }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn reload_index(
        &self,
        request: Request<ReloadIndexRequest>,
    ) -> Result<Response<ReloadIndexResponse>, Status> {
        let path = request.into_inner().path;
        let result = match path.as_str() {
            "" => reload(&self.shared, None).await,
            requested => match self.root.resolve(requested) {
                Ok(dir) => reload(&self.shared, Some(dir)).await,
                Err(status) => {
                    tracing::warn!(
                        path = requested,
                        reason = status.message(),
                        "reload refused"
                    );
                    Err(status)
                }
            },
        };
        counted(&self.shared, "ReloadIndex", result)
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        if self.shared.options.writes.read_only {
            return counted(&self.shared, "Delete", Err(read_only()));
        }
        let ids = request.into_inner().ids;
        let requested = ids.len();
        let max = self.shared.options.max_delete_ids;
        if requested > max {
            let status = Status::resource_exhausted(format!(
                "ids: {requested} ids exceed the server limit max_delete_ids = {max}; send them \
                 in several calls"
            ));
            return counted(&self.shared, "Delete", Err(status));
        }
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
                let deleted_count = served.index.deleted_count();
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
        counted(&self.shared, "Delete", result)
    }

    async fn upsert(
        &self,
        request: Request<UpsertRequest>,
    ) -> Result<Response<UpsertResponse>, Status> {
        let result = self.upsert_one(request.into_inner()).await;
        counted(&self.shared, "Upsert", result)
    }

    async fn upsert_stream(
        &self,
        request: Request<Streaming<UpsertRequest>>,
    ) -> Result<Response<UpsertResponse>, Status> {
        let result = self.upsert_many(request.into_inner()).await;
        counted(&self.shared, "UpsertStream", result)
    }
}

/// Counts a finished call of `method` in the metrics and wraps its answer.
fn counted<T>(
    shared: &Shared,
    method: &str,
    result: Result<T, Status>,
) -> Result<Response<T>, Status> {
    let code = result
        .as_ref()
        .map_or_else(Status::code, |_| tonic::Code::Ok);
    shared.metrics.count(method, code);
    result.map(Response::new)
}

/// FAILED_PRECONDITION for a write to a server started with `--read-only`.
fn read_only() -> Status {
    Status::failed_precondition("writes are refused: this server was started with --read-only")
}

impl AdminService {
    /// The writable index, or FAILED_PRECONDITION saying why there is none.
    fn writable(&self) -> Result<Arc<tandem_engine::live::LiveIndex>, Status> {
        if self.shared.options.writes.read_only {
            return Err(read_only());
        }
        self.shared.live().cloned()
    }

    async fn upsert_one(&self, request: UpsertRequest) -> Result<UpsertResponse, Status> {
        let live = self.writable()?;
        let wait = request.wait_for_visible;
        let outcome = writes::upsert_batch(&self.shared, &live, request, "").await?;
        if wait {
            writes::wait_visible(&live, outcome.seq).await?;
        }
        Ok(UpsertResponse {
            acknowledged: outcome.acknowledged,
            replaced: outcome.replaced,
            batches: 1,
            seq: outcome.seq,
        })
    }

    async fn upsert_many(
        &self,
        mut stream: Streaming<UpsertRequest>,
    ) -> Result<UpsertResponse, Status> {
        let live = self.writable()?;
        let mut total = UpsertResponse::default();
        let mut wait = false;
        while let Some(request) = stream.message().await? {
            wait |= request.wait_for_visible;
            let prefix = format!("batches[{}].", total.batches);
            let outcome = writes::upsert_batch(&self.shared, &live, request, &prefix).await?;
            total.acknowledged += outcome.acknowledged;
            total.replaced += outcome.replaced;
            total.batches += 1;
            total.seq = outcome.seq;
        }
        if wait && total.batches > 0 {
            writes::wait_visible(&live, total.seq).await?;
        }
        Ok(total)
    }
}

/// What the main listener answers Admin calls with when Admin has its own listener
/// (`--admin-listen`): UNIMPLEMENTED, naming where Admin is served.
pub struct Elsewhere;

impl Elsewhere {
    fn refusal() -> Status {
        Status::unimplemented(
            "tandem.v1.Admin is not served on this port: this server serves it on its admin \
             listener (--admin-listen)",
        )
    }
}

#[tonic::async_trait]
impl Admin for Elsewhere {
    async fn reload_index(
        &self,
        _request: Request<ReloadIndexRequest>,
    ) -> Result<Response<ReloadIndexResponse>, Status> {
        Err(Elsewhere::refusal())
    }

    async fn delete(
        &self,
        _request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        Err(Elsewhere::refusal())
    }

    async fn upsert(
        &self,
        _request: Request<UpsertRequest>,
    ) -> Result<Response<UpsertResponse>, Status> {
        Err(Elsewhere::refusal())
    }

    async fn upsert_stream(
        &self,
        _request: Request<Streaming<UpsertRequest>>,
    ) -> Result<Response<UpsertResponse>, Status> {
        Err(Elsewhere::refusal())
    }
}

/// Reloads (see [`Shared::reload`]) and logs the outcome; a failure keeps the old index and is
/// FAILED_PRECONDITION naming the reason.
pub async fn reload(
    shared: &Arc<Shared>,
    dir: Option<PathBuf>,
) -> Result<ReloadIndexResponse, Status> {
    match shared.reload(dir).await {
        Ok((served, load_ms)) => {
            shared.start_checksums();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned_without_the_filesystem() {
        for (path, clean) in [
            ("/a/b/../c/./d", "/a/c/d"),
            ("/a/../../..", "/"),
            ("/a/b/", "/a/b"),
        ] {
            assert_eq!(lexically_clean(Path::new(path)), PathBuf::from(clean));
        }
    }

    #[test]
    fn reload_paths_stay_under_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("indexes");
        for d in ["indexes/v1", "indexes/v2", "elsewhere/v3"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let served = root.join("v1");
        let r = IndexRoot::new(Some(&root), &served).unwrap();
        let real_root = root.canonicalize().unwrap();
        assert_eq!(r.path(), real_root);
        assert_eq!(r.resolve("v2").unwrap(), real_root.join("v2"));
        let absolute = root.join("v2").display().to_string();
        assert_eq!(r.resolve(&absolute).unwrap(), real_root.join("v2"));
        let code = |p: &str| r.resolve(p).map_or_else(|s| s.code(), |_| tonic::Code::Ok);
        assert_eq!(code("../elsewhere/v3"), tonic::Code::PermissionDenied);
        assert_eq!(code("v2/../../elsewhere/v3"), tonic::Code::PermissionDenied);
        assert_eq!(code("/etc"), tonic::Code::PermissionDenied);
        assert_eq!(code("missing"), tonic::Code::FailedPrecondition);
        // Outside and missing: refused as outside, without looking.
        assert_eq!(code("../no-such-dir"), tonic::Code::PermissionDenied);
        let message = r.resolve("/etc").unwrap_err().message().to_string();
        assert!(
            message.starts_with("path: \"/etc\" is outside"),
            "{message}"
        );
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path().join("elsewhere/v3"), root.join("escape"))
                .unwrap();
            assert_eq!(code("escape"), tonic::Code::PermissionDenied);
            std::os::unix::fs::symlink(root.join("v2"), root.join("latest")).unwrap();
            assert_eq!(r.resolve("latest").unwrap(), real_root.join("v2"));
        }

        // Without --index-root: the parent of the served index.
        let default = IndexRoot::new(None, &served).unwrap();
        assert_eq!(default.path(), real_root);
        // The index served at start must be under a configured root.
        let outside = IndexRoot::new(Some(&root), &dir.path().join("elsewhere/v3")).unwrap_err();
        assert!(
            outside.to_string().contains("not under --index-root"),
            "{outside}"
        );
        let missing = IndexRoot::new(Some(&dir.path().join("nope")), &served).unwrap_err();
        assert!(
            format!("{missing:#}").contains("--index-root"),
            "{missing:#}"
        );
    }
}
