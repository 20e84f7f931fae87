//! Query-time filters: which documents a query may return.
//!
//! A [`Filter`] (an include set and an exclude set of external ids, and an attribute
//! expression, [`crate::expr`]) is compiled with the index's deleted documents into an
//! [`Admit`]: a `roaring` bitmap of internal ids the first stage consults as it scores, so a
//! filtered query still fills its `kappa` candidates whenever that many admitted documents match
//! the query. [`Admit`] itself lives in the leaf module [`crate::admit`], so the first stages
//! below the index can take one without depending on this compilation step.

use crate::attributes::{Attributes, Kind};
use crate::error::{Error, Result};
use crate::segment::Segment;
use roaring::RoaringBitmap;
use std::collections::BTreeMap;
use std::sync::Arc;

pub use crate::admit::Admit;
pub use crate::expr::{parse, Expr};

/// What a query is restricted to. The default restricts nothing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Filter {
    /// Only these documents (external ids) may be returned; `None`: no include restriction.
    /// Ids the index does not have match nothing.
    pub include: Option<Vec<String>>,
    /// These documents are never returned (unknown ids are ignored).
    pub exclude: Vec<String>,
    /// Only documents whose attributes match this expression may be returned.
    pub expr: Option<Expr>,
    /// Only these internal ids may be returned: an include set resolved once and reused across
    /// queries (library users, benchmarks); ids past the index are ignored.
    pub include_docs: Option<Arc<RoaringBitmap>>,
}

impl Filter {
    /// Whether the filter restricts nothing.
    pub fn is_empty(&self) -> bool {
        self.include.is_none()
            && self.exclude.is_empty()
            && self.expr.is_none()
            && self.include_docs.is_none()
    }
}

impl Segment {
    /// Compiles `filter` with the documents deleted now into the set a query may return.
    /// Errors (an attribute the index does not have, a value of the wrong kind) name `filter`.
    pub fn admit(&self, filter: &Filter) -> Result<Admit> {
        self.admit_among(filter, 0, None)
    }

    /// [`Segment::admit`] for a segment among several: its first document has the index-wide
    /// id `base` (the ids of [`Filter::include_docs`] are index-wide), and `elsewhere` lists the
    /// attributes of every segment with their kinds (this segment's documents lack the others).
    pub fn admit_among(
        &self,
        filter: &Filter,
        base: u32,
        elsewhere: Option<&BTreeMap<String, Kind>>,
    ) -> Result<Admit> {
        let deleted = self.tombstones().current();
        if filter.is_empty() {
            return Ok(if deleted.is_empty() {
                Admit::All
            } else {
                Admit::Except(deleted)
            });
        }
        let doc_count = self.doc_count() as u32;
        let mut allowed = match &filter.include {
            Some(ids) => ids.iter().filter_map(|id| self.doc_by_id(id)).collect(),
            None => {
                let mut all = RoaringBitmap::new();
                all.insert_range(0..doc_count);
                all
            }
        };
        if let Some(docs) = &filter.include_docs {
            if base == 0 {
                allowed &= docs.as_ref();
            } else {
                let end = base.saturating_add(doc_count);
                allowed &= docs
                    .range(base..end)
                    .map(|d| d - base)
                    .collect::<RoaringBitmap>();
            }
        }
        if let Some(expr) = &filter.expr {
            let matching = match (self.attributes(), elsewhere) {
                (Some(attributes), None) => attributes.eval(expr)?,
                (Some(attributes), Some(elsewhere)) => attributes.eval_among(expr, elsewhere)?,
                (None, Some(elsewhere)) => {
                    Attributes::new(doc_count).eval_among(expr, elsewhere)?
                }
                (None, None) => return Err(Error::invalid(
                    "filter",
                    "this index has no attributes (build it from documents with an `attrs` field)",
                )),
            };
            allowed &= matching;
        }
        for id in &filter.exclude {
            if let Some(doc) = self.doc_by_id(id) {
                allowed.remove(doc);
            }
        }
        allowed -= deleted.as_ref();
        Ok(Admit::Only(allowed))
    }
}
