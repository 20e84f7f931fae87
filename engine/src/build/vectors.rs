//! Converting the input token vectors (`.npy`, float32/float16/int8) to their stored form: the
//! packed layout of the MaxSim kernels (f16 or int8), or PQ codes.

use crate::build::Progress;
use crate::error::{Error, Result};
use crate::format::array::ArrayWriter;
use crate::format::files;
use crate::format::staging::StagingDir;
use crate::kernels::{pack_doc, pack_doc_int8, packed_len};
use crate::pq::Codebook;
use half::f16;
use rayon::prelude::*;
use tandem_data::npy::{NpyArray, NpyDType};

/// Rows (about) converted per parallel step; a step holds whole documents.
const ROWS_PER_STEP: usize = 1 << 16;

/// The padded token offsets of the packed layout: document `d` occupies
/// `padded[d] · dim .. padded[d + 1] · dim` of the packed array, `padded[d + 1] − padded[d]`
/// being its token count rounded up to a multiple of [`BLOCK`].
pub fn padded_offsets(doc_offsets: &[u64]) -> Vec<u64> {
    let mut padded = Vec::with_capacity(doc_offsets.len());
    padded.push(0u64);
    for w in doc_offsets.windows(2) {
        let m = (w[1] - w[0]) as usize;
        let last = *padded.last().unwrap_or(&0);
        padded.push(last + (packed_len(m, 1)) as u64);
    }
    padded
}

/// Where a build reads token vectors from: an input `.npy` file, or rows a live writer holds
/// in memory.
pub trait VectorRows: Sync {
    /// Decodes rows `rows` into `out` as f32, row-major.
    fn rows_f32(&self, rows: std::ops::Range<usize>, out: &mut Vec<f32>) -> Result<()>;
    /// Where the rows come from, for error messages (a file name).
    fn source(&self) -> String;
}

/// An input `.npy` file of token vectors, int8 values scaled by `int8_scale`.
pub struct NpyRows<'a> {
    /// The array.
    pub array: &'a NpyArray,
    /// For int8 vectors: value = q × scale.
    pub int8_scale: Option<f32>,
}

impl VectorRows for NpyRows<'_> {
    fn rows_f32(&self, rows: std::ops::Range<usize>, out: &mut Vec<f32>) -> Result<()> {
        Ok(self.array.rows_f32(rows, self.int8_scale, out)?)
    }

    fn source(&self) -> String {
        self.array.path().display().to_string()
    }
}

/// Token vectors held in memory as float16, `dim` values per row.
pub struct F16Rows<'a> {
    /// Row-major values.
    pub values: &'a [f16],
    /// Values per row.
    pub dim: usize,
    /// What they are, for error messages.
    pub source: &'a str,
}

impl VectorRows for F16Rows<'_> {
    fn rows_f32(&self, rows: std::ops::Range<usize>, out: &mut Vec<f32>) -> Result<()> {
        out.clear();
        let values = self
            .values
            .get(rows.start * self.dim..rows.end * self.dim)
            .ok_or_else(|| {
                Error::bad_input(
                    self.source.to_string(),
                    format!("rows {rows:?} are past the end"),
                )
            })?;
        out.extend(values.iter().map(|v| v.to_f32()));
        Ok(())
    }

    fn source(&self) -> String {
        self.source.to_string()
    }
}

/// The stored form of the token vectors.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// f16 values in the packed layout of [`crate::kernels`].
    F16,
    /// int8 values in the packed layout with a scale per token.
    Int8,
    /// PQ codes of this codebook, one per token and subspace, and a scale per token.
    Pq(&'a Codebook),
}

/// Streams every document's token vectors into the array files of `target`, checking that each
/// value is finite and representable in f16. `doc_offsets` gives each document's rows in
/// `vectors`; `doc_ids` only serves error messages, which name the row, its document and token,
/// and the column.
pub fn write_packed(
    vectors: &dyn VectorRows,
    dim: usize,
    doc_offsets: &[u64],
    doc_ids: &[String],
    target: Target<'_>,
    staging: &mut StagingDir,
    progress: &dyn Progress,
) -> Result<()> {
    // The documents' rows of `vectors` (all of them, or one segment's).
    let first_row = doc_offsets.first().copied().unwrap_or(0);
    let rows = (doc_offsets.last().copied().unwrap_or(0) - first_row) as usize;
    let padded = padded_offsets(doc_offsets);
    let padded_tokens = padded.last().copied().unwrap_or(0) as usize;
    let mut sink = Sink::create(target, staging, padded_tokens * dim, padded_tokens, rows)?;
    progress.start("convert token vectors", rows as u64);
    let docs = doc_offsets.len() - 1;
    let mut first = 0;
    while first < docs {
        // Whole documents, about ROWS_PER_STEP rows (at least one document).
        let start_row = doc_offsets[first];
        let mut last = first + 1;
        while last < docs && doc_offsets[last + 1] - start_row <= ROWS_PER_STEP as u64 {
            last += 1;
        }
        let packed: Vec<Result<Packed>> = (first..last)
            .into_par_iter()
            .map(|doc| pack_one(vectors, doc_offsets, doc_ids, doc, dim, target))
            .collect();
        for doc in packed {
            sink.push(doc?)?;
        }
        progress.advance(doc_offsets[last] - start_row);
        first = last;
    }
    progress.finish();
    sink.finish(staging)
}

/// One document in the stored codec.
enum Packed {
    F16(Vec<f16>),
    Int8(Vec<i8>, Vec<f32>),
    Pq(Vec<u8>, Vec<f16>),
}

/// The files a codec writes. (One exists per build, so the variants' size difference is moot.)
#[allow(clippy::large_enum_variant)]
enum Sink {
    F16(ArrayWriter<f16>),
    Int8(ArrayWriter<i8>, ArrayWriter<f32>),
    Pq(ArrayWriter<u8>, ArrayWriter<f16>),
}

impl Sink {
    /// The writers for `values` packed values of `padded` padded tokens, or for the codes of
    /// `rows` tokens.
    fn create(
        target: Target<'_>,
        staging: &StagingDir,
        values: usize,
        padded: usize,
        rows: usize,
    ) -> Result<Sink> {
        Ok(match target {
            Target::F16 => Sink::F16(ArrayWriter::create(
                &staging.file_path(files::TOKENS_PACKED),
                files::TOKENS_PACKED,
                values as u64,
            )?),
            Target::Int8 => Sink::Int8(
                ArrayWriter::create(
                    &staging.file_path(files::TOKENS_INT8),
                    files::TOKENS_INT8,
                    values as u64,
                )?,
                ArrayWriter::create(
                    &staging.file_path(files::TOKENS_SCALES),
                    files::TOKENS_SCALES,
                    padded as u64,
                )?,
            ),
            Target::Pq(codebook) => Sink::Pq(
                ArrayWriter::create(
                    &staging.file_path(files::PQ_CODES),
                    files::PQ_CODES,
                    (rows * codebook.subspaces()) as u64,
                )?,
                ArrayWriter::create(
                    &staging.file_path(files::PQ_SCALES),
                    files::PQ_SCALES,
                    rows as u64,
                )?,
            ),
        })
    }

    fn push(&mut self, doc: Packed) -> Result<()> {
        match (self, doc) {
            (Sink::F16(w), Packed::F16(v)) => w.push_slice(&v),
            (Sink::Int8(wv, ws), Packed::Int8(v, s)) => {
                wv.push_slice(&v)?;
                ws.push_slice(&s)
            }
            (Sink::Pq(wc, ws), Packed::Pq(codes, scales)) => {
                wc.push_slice(&codes)?;
                ws.push_slice(&scales)
            }
            // pack_one produces the sink's codec by construction.
            _ => Ok(()),
        }
    }

    fn finish(self, staging: &mut StagingDir) -> Result<()> {
        match self {
            Sink::F16(w) => staging.record(files::TOKENS_PACKED, w.finish()?),
            Sink::Int8(wv, ws) => {
                staging.record(files::TOKENS_INT8, wv.finish()?);
                staging.record(files::TOKENS_SCALES, ws.finish()?);
            }
            Sink::Pq(wc, ws) => {
                staging.record(files::PQ_CODES, wc.finish()?);
                staging.record(files::PQ_SCALES, ws.finish()?);
            }
        }
        Ok(())
    }
}

/// Converts and packs one document's rows.
fn pack_one(
    vectors: &dyn VectorRows,
    doc_offsets: &[u64],
    doc_ids: &[String],
    doc: usize,
    dim: usize,
    target: Target<'_>,
) -> Result<Packed> {
    let (start, stop) = (doc_offsets[doc] as usize, doc_offsets[doc + 1] as usize);
    let mut values_f32 = Vec::new();
    vectors.rows_f32(start..stop, &mut values_f32)?;
    let rows: Vec<f16> = values_f32.iter().map(|&v| f16::from_f32(v)).collect();
    if let Some(i) = rows.iter().position(|h| !h.is_finite()) {
        let row = start + i / dim;
        return Err(Error::bad_input(
            format!("{}: row {row}", vectors.source()),
            format!(
                "(document {:?}, its token {}) column {}: value {} is not finite or exceeds the float16 range",
                doc_ids.get(doc).map(String::as_str).unwrap_or("?"),
                row - start,
                i % dim,
                values_f32[i]
            ),
        ));
    }
    Ok(match target {
        Target::F16 => {
            let mut packed = Vec::with_capacity(packed_len(stop - start, dim));
            pack_doc(&rows, dim, &mut packed);
            Packed::F16(packed)
        }
        Target::Int8 => {
            let (mut values, mut scales) = (Vec::new(), Vec::new());
            pack_doc_int8(&values_f32, dim, &mut values, &mut scales);
            Packed::Int8(values, scales)
        }
        Target::Pq(codebook) => {
            let mut codes = Vec::with_capacity((stop - start) * codebook.subspaces());
            let scales = values_f32
                .chunks_exact(dim)
                .map(|row| codebook.encode(row, &mut codes))
                .collect();
            Packed::Pq(codes, scales)
        }
    })
}

/// Checks the vectors' element type against the `--int8-scale` option.
pub fn check_dtype(vectors: &NpyArray, int8_scale: Option<f32>) -> Result<()> {
    let location = || vectors.path().display().to_string();
    match (vectors.dtype(), int8_scale) {
        (NpyDType::I8, None) => Err(Error::bad_input(
            location(),
            "int8 vectors need --int8-scale S (value = q × S)",
        )),
        (NpyDType::I8, Some(s)) if !(s.is_finite() && s > 0.0) => Err(Error::bad_input(
            location(),
            format!("--int8-scale {s} must be finite and > 0"),
        )),
        (NpyDType::I8, Some(_)) | (NpyDType::F32 | NpyDType::F16, None) => Ok(()),
        (NpyDType::F32 | NpyDType::F16, Some(_)) => Err(Error::bad_input(
            location(),
            format!(
                "--int8-scale is only for int8 vectors, these are {}",
                vectors.dtype().name()
            ),
        )),
        (other, _) => Err(Error::bad_input(
            location(),
            format!(
                "token vectors must be float32, float16 or int8, got {}",
                other.name()
            ),
        )),
    }
}
