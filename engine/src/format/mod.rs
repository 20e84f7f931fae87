//! The on-disk index format.
//!
//! An index is a directory holding `manifest.json` and a set of *array files*. The manifest
//! carries the format version, the index's counts and build parameters, and the size and xxh3-64
//! checksum of every other file. Each array file starts with a 64-byte header (magic, format
//! version, element type, the array's name and length) followed by the little-endian elements,
//! so it can be memory-mapped and viewed as a slice without copying. See ARCHITECTURE.md for the
//! list of files.
//!
//! Writing goes through [`staging::StagingDir`]: files are written into a hidden temporary
//! directory beside the target, fsynced, and the directory is renamed into place only after the
//! manifest is written, so an interrupted build never leaves an index that would load.

pub mod array;
pub mod invariants;
pub mod manifest;
pub mod segments;
pub mod staging;
pub mod strings;

#[cfg(not(target_endian = "little"))]
compile_error!("tandem's index format is little-endian; big-endian targets are not supported");

/// The version of the on-disk format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// Names of the files of an index directory.
pub mod files {
    /// The manifest (JSON).
    pub const MANIFEST: &str = "manifest.json";
    /// Vocabulary strings: offsets (`u64`, vocab_size + 1) and UTF-8 bytes.
    pub const VOCAB_OFFSETS: &str = "vocab.offsets";
    /// Vocabulary strings: the UTF-8 bytes.
    pub const VOCAB_BYTES: &str = "vocab.bytes";
    /// External document ids: offsets (`u64`, doc_count + 1).
    pub const IDS_OFFSETS: &str = "ids.offsets";
    /// External document ids: the UTF-8 bytes.
    pub const IDS_BYTES: &str = "ids.bytes";
    /// Start of each term's posting list (`u64`, vocab_size + 1).
    pub const POSTINGS_OFFSETS: &str = "postings.offsets";
    /// Document ids of all postings (`u32`), ascending within a term.
    pub const POSTINGS_DOCS: &str = "postings.docs";
    /// Weights of all postings (`f32`), parallel to the document ids.
    pub const POSTINGS_WEIGHTS: &str = "postings.weights";
    /// First token row of each document (`u64`, doc_count + 1).
    pub const TOKENS_OFFSETS: &str = "tokens.offsets";
    /// Start of each document in the packed token array, in padded tokens (`u64`, doc_count + 1):
    /// each document's token count rounded up to a multiple of 16.
    pub const TOKENS_PADDED: &str = "tokens.padded";
    /// Token vectors (`f16`), each document packed in blocks of 16 tokens, dimension-major
    /// within a block (the layout of `crate::kernels`), documents in order.
    pub const TOKENS_PACKED: &str = "tokens.packed";
    /// With the int8 codec instead of `tokens.packed`: the int8 values in the same layout.
    pub const TOKENS_INT8: &str = "tokens.int8";
    /// With the int8 codec: one `f32` scale per padded token (value = q × scale).
    pub const TOKENS_SCALES: &str = "tokens.scales";
    /// With the pq codec instead of `tokens.packed`: one `u8` code per token and subspace,
    /// token after token (`token_count × subspaces`, not padded).
    pub const PQ_CODES: &str = "pq.codes";
    /// With the pq codec: one `f16` scale per token (the decoded vector is multiplied by it).
    pub const PQ_SCALES: &str = "pq.scales";
    /// With the pq codec: the subspace bounds (`u32`, subspaces + 1 ascending dimensions from 0
    /// to dim).
    pub const PQ_SUBSPACES: &str = "pq.subspaces";
    /// With the pq codec: the centroids (`f32`, 256 per dimension: subspace after subspace, each
    /// its 256 centroids in code order).
    pub const PQ_CODEBOOK: &str = "pq.codebook";
}
