//! An index: one segment, or a list of segments searched as one.
//!
//! A directory holding `manifest.json` is a single [`Segment`] (what batch builds wrote before
//! segments existed, and still write without `--segment-docs`). A directory holding
//! `segments.json` ([`crate::format::segments`]) is a list of segment subdirectories. Either
//! way queries see one index: document ids run through the segments in order (segment `i`'s
//! local id `d` is index-wide `bases[i] + d`), the vocabulary is the longest segment's (every
//! segment's vocabulary is a prefix of it, so a term id means the same term everywhere), and
//! the pipeline ([`Segments::search`]) takes the global top-κ by sparse score over all
//! segments before reranking, so a split index ranks exactly as one segment would.

use crate::attributes::Kind;
use crate::error::{Error, Result};
use crate::format::files;
use crate::format::segments::{self, SegmentList};
use crate::params::FirstStage;
use crate::pipeline::{Limits, Members, Query, SearchOutput, SearchParams, Segments};
use crate::segment::{DeleteOutcome, Segment, Verify};
use crate::topk::Scored;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// An open, validated index: its segments, in order. Share it behind an `Arc`.
pub struct Index {
    dir: PathBuf,
    /// Each segment's directory name; empty for a single-segment directory.
    names: Vec<String>,
    segments: Vec<Arc<Segment>>,
    /// The index-wide id of each segment's first document.
    bases: Vec<u32>,
    doc_count: usize,
    /// The segment with the longest vocabulary (the index's vocabulary).
    vocab_from: usize,
    /// The segment with the most documents, whose build settings speak for the index.
    primary: usize,
    /// Every attribute some segment has; `None` for a single segment.
    attribute_kinds: Option<BTreeMap<String, Kind>>,
}

impl Index {
    /// Opens the index at `dir`, verifying every checksum and invariant.
    pub fn open(dir: &Path) -> Result<Index> {
        Index::open_with(dir, Verify::Full)
    }

    /// Opens the index at `dir` with the given level of verification: a single segment, or
    /// the segments `segments.json` lists (which must agree on dim and codec, have
    /// vocabularies that are prefixes of one another, and the document counts the list says).
    pub fn open_with(dir: &Path, verify: Verify) -> Result<Index> {
        let list_path = dir.join(segments::FILE);
        let single = dir.join(files::MANIFEST).exists();
        if single && list_path.exists() {
            return Err(Error::corrupt(
                dir,
                "holds both manifest.json and segments.json: a directory is one segment or a list of segments",
            ));
        }
        if !list_path.exists() {
            let segment = Segment::open_with(dir, verify)?;
            return Index::assemble(dir, vec![String::new()], vec![Arc::new(segment)], true);
        }
        let list = SegmentList::read(&list_path)?;
        let opened = Index::open_listed(dir, &list, verify)?;
        let names = list.segments.iter().map(|e| e.name.clone()).collect();
        Index::assemble(dir, names, opened, true)
    }

    /// Opens the segments `list` names in `dir`, in order, checking each one's document count
    /// against the list.
    pub fn open_listed(
        dir: &Path,
        list: &SegmentList,
        verify: Verify,
    ) -> Result<Vec<Arc<Segment>>> {
        let list_path = dir.join(segments::FILE);
        let mut opened = Vec::with_capacity(list.segments.len());
        for entry in &list.segments {
            let segment = Segment::open_with(&dir.join(&entry.name), verify)?;
            if segment.doc_count() as u64 != entry.doc_count {
                return Err(Error::corrupt(
                    &list_path,
                    format!(
                        "segment {} has {} documents, the list says {}",
                        entry.name,
                        segment.doc_count(),
                        entry.doc_count
                    ),
                ));
            }
            opened.push(Arc::new(segment));
        }
        Ok(opened)
    }

    /// The index of `segments` (named `names`, in the directory `dir`), already open: how a
    /// writer publishes a new view of an index whose segments it shares with the views before.
    /// The segments must agree as [`Index::open_with`] checks (dim, codec, vocabularies); that
    /// no external id is live in two of them is the writer's to keep (not checked again).
    pub fn from_segments(
        dir: &Path,
        names: Vec<String>,
        segments: Vec<Arc<Segment>>,
    ) -> Result<Index> {
        if segments.is_empty() || names.len() != segments.len() {
            return Err(Error::invalid(
                "segments",
                "an index needs at least one segment, each named",
            ));
        }
        Index::assemble(dir, names, segments, false)
    }

    fn assemble(
        dir: &Path,
        names: Vec<String>,
        segments: Vec<Arc<Segment>>,
        check: bool,
    ) -> Result<Index> {
        let list_path = dir.join(segments::FILE);
        let first = &segments[0];
        let mut bases = Vec::with_capacity(segments.len());
        let mut doc_count: u64 = 0;
        for (name, segment) in names.iter().zip(&segments) {
            if segment.dim() != first.dim()
                || segment.manifest().vector_codec != first.manifest().vector_codec
            {
                return Err(Error::corrupt(
                    &list_path,
                    format!(
                        "segment {name} stores {} vectors of dim {}, segment {} {} of dim {}",
                        segment.manifest().vector_codec,
                        segment.dim(),
                        names[0],
                        first.manifest().vector_codec,
                        first.dim()
                    ),
                ));
            }
            bases.push(u32::try_from(doc_count).map_err(|_| {
                Error::corrupt(&list_path, "the segments hold more than 2^32 documents")
            })?);
            doc_count += segment.doc_count() as u64;
        }
        if doc_count > u32::MAX as u64 {
            return Err(Error::corrupt(
                &list_path,
                "the segments hold more than 2^32 documents",
            ));
        }
        let vocab_from = (0..segments.len())
            .max_by_key(|&i| (segments[i].vocab_size(), std::cmp::Reverse(i)))
            .unwrap_or(0);
        // The largest segment with an approximate first stage, else the largest.
        let primary = (0..segments.len())
            .max_by_key(|&i| {
                (
                    segments[i].approx().is_some(),
                    segments[i].doc_count(),
                    std::cmp::Reverse(i),
                )
            })
            .unwrap_or(0);
        let attribute_kinds = (segments.len() > 1).then(|| {
            segments
                .iter()
                .filter_map(|s| s.attributes())
                .flat_map(|a| a.kinds().map(|(name, kind)| (name.to_string(), kind)))
                .collect()
        });
        let index = Index {
            dir: dir.to_path_buf(),
            names,
            segments,
            bases,
            doc_count: doc_count as usize,
            vocab_from,
            primary,
            attribute_kinds,
        };
        if check {
            index.check()?;
        }
        Ok(index)
    }

    /// Checks that the segments agree: every vocabulary is a prefix of the longest one (a term
    /// id means one term everywhere), and no external id is live in two segments (queries would
    /// return it twice). [`Index::open_with`] runs it.
    pub fn check(&self) -> Result<()> {
        let list_path = self.dir.join(segments::FILE);
        let (names, segments, vocab_from) = (&self.names, &self.segments, self.vocab_from);
        let longest = &segments[vocab_from];
        for (name, segment) in names.iter().zip(segments.iter()) {
            if let Some(term) =
                (0..segment.vocab_size() as u32).find(|&t| segment.term(t) != longest.term(t))
            {
                return Err(Error::corrupt(
                    &list_path,
                    format!(
                        "segment {name}'s term {term} is {:?} but segment {}'s is {:?}: their vocabularies must agree",
                        segment.term(term).unwrap_or_default(),
                        names[vocab_from],
                        longest.term(term).unwrap_or_default()
                    ),
                ));
            }
        }
        self.check_ids_unique()
    }

    /// Refuses an external id held by documents of two segments that are both live.
    fn check_ids_unique(&self) -> Result<()> {
        if self.segments.len() < 2 {
            return Ok(());
        }
        let mut seen: HashSet<&str> = HashSet::new();
        for (name, segment) in self.names.iter().zip(&self.segments) {
            let deleted = segment.tombstones().current();
            for doc in 0..segment.doc_count() as u32 {
                if deleted.contains(doc) {
                    continue;
                }
                let id = segment.external_id(doc).unwrap_or_default();
                if !seen.insert(id) {
                    return Err(Error::corrupt(
                        self.dir.join(name),
                        format!("document {id:?} is live in two segments"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The segments searched as one (see [`Segments`]).
    pub fn view(&self) -> Segments<'_> {
        Segments {
            segments: Members::Shared(&self.segments),
            bases: &self.bases,
            vocab_size: self.vocab_size(),
            dim: self.dim(),
            attribute_kinds: self.attribute_kinds.as_ref(),
        }
    }

    /// Validates `query` and `params`, then runs the pipeline over every segment.
    pub fn search(
        &self,
        query: &Query,
        params: &SearchParams,
        limits: &Limits,
    ) -> Result<SearchOutput> {
        self.view()
            .search(query, params, limits, &AtomicBool::new(false))
    }

    /// [`Index::search`] that gives up with [`Error::Cancelled`] once `cancelled` is raised.
    pub fn search_cancellable(
        &self,
        query: &Query,
        params: &SearchParams,
        limits: &Limits,
        cancelled: &AtomicBool,
    ) -> Result<SearchOutput> {
        self.view().search(query, params, limits, cancelled)
    }

    /// The first stage alone over every segment (see [`Segments::first_stage`]).
    pub fn first_stage(
        &self,
        query: &Query,
        kappa: usize,
        stage: &FirstStage,
    ) -> Result<Vec<Scored>> {
        self.view().first_stage(query, kappa, stage)
    }

    /// The segments, in order.
    pub fn segments(&self) -> &[Arc<Segment>] {
        &self.segments
    }

    /// Each segment's directory name (relative to [`Index::dir`]); one empty name for a
    /// single-segment directory.
    pub fn segment_names(&self) -> &[String] {
        &self.names
    }

    /// The segment whose build settings (first-stage defaults, calibration, build parameters)
    /// speak for the index: the one with the most documents among those with an approximate
    /// first stage (if any has one).
    pub fn primary(&self) -> &Segment {
        &self.segments[self.primary]
    }

    /// The directory the index was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Documents over all segments, deleted ones included.
    pub fn doc_count(&self) -> usize {
        self.doc_count
    }

    /// Deleted documents over all segments.
    pub fn deleted_count(&self) -> u64 {
        self.segments.iter().map(|s| s.tombstones().len()).sum()
    }

    /// Documents not deleted.
    pub fn live_count(&self) -> u64 {
        self.doc_count as u64 - self.deleted_count()
    }

    /// Terms of the index's vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.segments[self.vocab_from].vocab_size()
    }

    /// Dimensions per token vector.
    pub fn dim(&self) -> usize {
        self.segments[0].dim()
    }

    /// How token vectors are stored (`f16`, `int8` or `pq`).
    pub fn vector_codec(&self) -> &str {
        &self.segments[0].manifest().vector_codec
    }

    /// Token vectors over all segments.
    pub fn token_count(&self) -> u64 {
        self.segments.iter().map(|s| s.manifest().token_count).sum()
    }

    /// Postings over all segments.
    pub fn posting_count(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| s.manifest().posting_count)
            .sum()
    }

    /// Bytes of all files of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size_bytes()).sum()
    }

    /// Bytes of stored token vectors over all segments.
    pub fn vector_bytes(&self) -> usize {
        self.segments
            .iter()
            .map(|s| s.tokens().vector_bytes())
            .sum()
    }

    /// Bytes of token vectors in the page cache now, over all segments.
    pub fn token_resident_bytes(&self) -> usize {
        self.segments
            .iter()
            .map(|s| s.tokens().resident_bytes())
            .sum()
    }

    /// Re-checks whether each segment's token vectors are in memory (see
    /// [`TokenStore::check_residency`](crate::tokens::TokenStore::check_residency)); true when
    /// all are.
    pub fn check_residency(&self) -> bool {
        // Every segment re-checks (no short cut): the check updates each store's own flag.
        let mut all = true;
        for segment in &self.segments {
            all &= segment.tokens().check_residency();
        }
        all
    }

    /// Whether every segment stores its documents' token strings (for explanations).
    pub fn has_doc_tokens(&self) -> bool {
        self.segments
            .iter()
            .all(|s| s.doc_token_strings().is_some())
    }

    /// Every attribute some segment has, with its kind.
    pub fn attribute_kinds(&self) -> BTreeMap<String, Kind> {
        match &self.attribute_kinds {
            Some(kinds) => kinds.clone(),
            None => self
                .segments
                .iter()
                .filter_map(|s| s.attributes())
                .flat_map(|a| a.kinds().map(|(name, kind)| (name.to_string(), kind)))
                .collect(),
        }
    }

    /// The vocabulary term with id `term`.
    pub fn term(&self, term: u32) -> Option<&str> {
        self.segments[self.vocab_from].term(term)
    }

    /// Resolves `(token, weight)` pairs through the vocabulary (see
    /// [`Segment::resolve_terms`]).
    pub fn resolve_terms<'t>(
        &self,
        terms: impl IntoIterator<Item = (&'t str, f32)>,
    ) -> (Vec<(u32, f32)>, usize) {
        self.segments[self.vocab_from].resolve_terms(terms)
    }

    /// The segment holding index-wide document `doc`, and its id there.
    pub fn locate(&self, doc: u32) -> Option<(&Segment, u32)> {
        self.view().locate(doc)
    }

    /// The external id of index-wide document `doc`.
    pub fn external_id(&self, doc: u32) -> Option<&str> {
        let (segment, local) = self.locate(doc)?;
        segment.external_id(local)
    }

    /// The string of token `position` of index-wide document `doc`, when its segment stores
    /// them.
    pub fn doc_token_text(&self, doc: u32, position: u32) -> Option<&str> {
        let (segment, local) = self.locate(doc)?;
        segment.doc_token_text(local, position)
    }

    /// The index-wide id of the live document with external id `id` (or of a deleted copy when
    /// none is live).
    pub fn doc_by_id(&self, id: &str) -> Option<u32> {
        let mut deleted = None;
        for (segment, &base) in self.segments.iter().zip(&self.bases).rev() {
            if let Some(local) = segment.doc_by_id(id) {
                if !segment.tombstones().current().contains(local) {
                    return Some(base + local);
                }
                deleted.get_or_insert(base + local);
            }
        }
        deleted
    }

    /// Deletes the documents with external ids `ids` in every segment that holds them (see
    /// [`Segment::delete`]); an id is unknown when no segment has it.
    pub fn delete<S: AsRef<str>>(&self, ids: &[S]) -> Result<DeleteOutcome> {
        if let [segment] = self.segments.as_slice() {
            return segment.delete(ids);
        }
        let mut total = DeleteOutcome::default();
        let mut known: HashSet<&str> = HashSet::new();
        for segment in &self.segments {
            let held: Vec<&str> = ids
                .iter()
                .map(AsRef::as_ref)
                .filter(|id| segment.doc_by_id(id).is_some())
                .collect();
            if held.is_empty() {
                continue;
            }
            let outcome = segment.delete(&held)?;
            total.deleted += outcome.deleted;
            known.extend(held);
        }
        let mut reported: HashSet<&str> = HashSet::new();
        let mut given = 0u64;
        for id in ids {
            let id = id.as_ref();
            if !reported.insert(id) {
                continue;
            }
            if known.contains(id) {
                given += 1;
            } else {
                total.unknown.push(id.to_string());
            }
        }
        total.already_deleted = given.saturating_sub(total.deleted);
        Ok(total)
    }

    /// The first stage a query uses when it does not choose: the primary segment's (see
    /// [`Segment::default_first_stage`]); segments without an approximate first stage are
    /// searched exactly.
    pub fn default_first_stage(&self) -> FirstStage {
        self.primary().default_first_stage()
    }

    /// Recomputes every file's checksum, segment after segment (see
    /// [`Segment::verify_checksums`]).
    pub fn verify_checksums(&self, stop: &AtomicBool) -> Result<()> {
        self.segments
            .iter()
            .try_for_each(|s| s.verify_checksums(stop))
    }

    /// For each file of each segment (named `SEGMENT/FILE` in a list of segments), how many of
    /// its bytes are in the page cache now (see [`Segment::resident_bytes_by_file`]).
    pub fn resident_bytes_by_file(&self) -> Vec<(String, usize)> {
        self.names
            .iter()
            .zip(&self.segments)
            .flat_map(|(name, segment)| {
                segment
                    .resident_bytes_by_file()
                    .into_iter()
                    .map(move |(file, bytes)| {
                        let label = if name.is_empty() {
                            file.to_string()
                        } else {
                            format!("{name}/{file}")
                        };
                        (label, bytes)
                    })
            })
            .collect()
    }
}
