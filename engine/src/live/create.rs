//! An empty index that a server can serve and fill with live writes.

use crate::attributes::Attributes;
use crate::build::docs::ParsedDocs;
use crate::build::vectors::F16Rows;
use crate::build::{write_segment, NoProgress, Part, Storing};
use crate::error::{Error, Result};
use crate::format::segments::{self, SealStage, SegmentEntry, SegmentList, WriteState};
use crate::format::staging::StagingDir;
use crate::tokens::Codec;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What an empty index is made of.
#[derive(Debug, Clone)]
pub struct CreateConfig {
    /// Dimensions per token vector.
    pub dim: usize,
    /// How token vectors are stored (f16 or int8: PQ needs vectors to train its codebook, so a
    /// PQ index starts from a batch build).
    pub codec: Codec,
    /// A fixed vocabulary (documents with other terms are refused); `None`: it grows.
    pub vocab: Option<Vec<String>>,
    /// The approximate first stage of sealed segments (`None`: exact only).
    pub first_stage: Option<SealStage>,
}

/// Creates the index at `out` (replacing it with `overwrite`): a segment list holding one
/// empty segment with the vocabulary, dim and codec, and the write state.
pub fn create(config: &CreateConfig, out: &Path, overwrite: bool) -> Result<PathBuf> {
    if config.dim == 0 || u32::try_from(config.dim).is_err() {
        return Err(Error::bad_input("--dim", "must be between 1 and 2^32 - 1"));
    }
    if config.codec == Codec::Pq {
        return Err(Error::bad_input(
            "--codec",
            "pq needs token vectors to train its codebook: build the first documents with \
             `tandem-index build --codec pq --segment-docs N` and write into that index",
        ));
    }
    let staging = StagingDir::create(out, overwrite)?;
    let name = segments::segment_name(0);
    let vocab = config.vocab.clone().unwrap_or_default();
    let docs = ParsedDocs {
        ids: Vec::new(),
        offsets: vec![0],
        terms: Vec::new(),
        weights: Vec::new(),
        vocab,
        attributes: Attributes::new(0),
    };
    let mut parameters = BTreeMap::new();
    parameters.insert(
        "source".to_string(),
        "tandem-index create (empty)".to_string(),
    );
    write_segment(
        &Storing {
            codec: config.codec,
            codebook: None,
            approx: None,
        },
        &F16Rows {
            values: &[],
            dim: config.dim,
            source: "no vectors",
        },
        config.dim,
        Part {
            docs: &docs,
            rows: &[0],
            token_strings: None,
            parameters,
        },
        (&staging.path().join(&name), false),
        &NoProgress,
    )?;
    let list = SegmentList::with_writes(
        vec![SegmentEntry { name, doc_count: 0 }],
        Some(WriteState {
            sealed_seq: 0,
            fixed_vocab: config.vocab.is_some(),
            next_segment: 1,
            first_stage: config.first_stage,
        }),
    );
    staging.commit_segments(&list)
}
