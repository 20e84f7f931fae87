//! [`Admit`]: the documents a query may return, as the first stages consult it.
//!
//! A leaf of the engine's layering (see ARCHITECTURE.md, "Engine modules"): the exact and the
//! approximate first stage take an `Admit`, and [`crate::filter`] compiles one from a query's
//! filter and the deleted documents, so the type sits below all of them.

use roaring::RoaringBitmap;
use std::sync::Arc;

/// The documents a query may return: the filter and the deleted documents, compiled.
#[derive(Debug, Clone)]
pub enum Admit {
    /// Every document (no filter, nothing deleted).
    All,
    /// Every document but the deleted ones (no filter).
    Except(Arc<RoaringBitmap>),
    /// Exactly these documents.
    Only(RoaringBitmap),
}

impl Admit {
    /// Whether `doc` may be returned.
    #[inline]
    pub fn admits(&self, doc: u32) -> bool {
        match self {
            Admit::All => true,
            Admit::Except(deleted) => !deleted.contains(doc),
            Admit::Only(allowed) => allowed.contains(doc),
        }
    }

    /// Whether every document is admitted.
    pub fn is_all(&self) -> bool {
        matches!(self, Admit::All)
    }

    /// Number of admitted documents out of `doc_count`.
    pub fn len(&self, doc_count: usize) -> u64 {
        match self {
            Admit::All => doc_count as u64,
            Admit::Except(deleted) => (doc_count as u64).saturating_sub(deleted.len()),
            Admit::Only(allowed) => allowed.len(),
        }
    }
}
