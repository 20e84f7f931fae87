//! Converting the input token vectors (`.npy`, float32/float16/int8) to the stored f16 rows.

use crate::build::Progress;
use crate::error::{Error, Result};
use crate::format::array::{ArrayWriter, WrittenFile};
use crate::npy::{NpyArray, NpyDType};
use half::f16;
use rayon::prelude::*;
use std::path::Path;

/// Rows converted per parallel step.
const ROWS_PER_STEP: usize = 1 << 16;
/// Rows per task within a step.
const ROWS_PER_TASK: usize = 4096;

/// Streams every row of `vectors` into an f16 array file at `out`, checking that each value is
/// finite and representable in f16. `doc_offsets` (first row of each document) and `doc_ids`
/// only serve error messages, which name the row, its document and token, and the column.
pub fn write_f16_rows(
    vectors: &NpyArray,
    int8_scale: Option<f32>,
    doc_offsets: &[u64],
    doc_ids: &[String],
    out: &Path,
    name: &str,
    progress: &dyn Progress,
) -> Result<WrittenFile> {
    let (rows, dim) = vectors.matrix_shape()?;
    let mut writer = ArrayWriter::<f16>::create(out, name, (rows * dim) as u64)?;
    progress.start("convert token vectors", rows as u64);
    for step in (0..rows).step_by(ROWS_PER_STEP) {
        let end = (step + ROWS_PER_STEP).min(rows);
        let tasks: Vec<Result<Vec<f16>>> = (step..end)
            .step_by(ROWS_PER_TASK)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|start| {
                let stop = (start + ROWS_PER_TASK).min(end);
                let mut values = Vec::new();
                vectors.rows_f32(start..stop, int8_scale, &mut values);
                let converted: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
                if let Some(i) = converted.iter().position(|h| !h.is_finite()) {
                    let row = start + i / dim;
                    let doc = doc_offsets.partition_point(|&o| o <= row as u64) - 1;
                    let token = row as u64 - doc_offsets[doc];
                    return Err(Error::bad_input(
                        format!("{}: row {row}", vectors.path().display()),
                        format!(
                            "(document {:?}, its token {token}) column {}: value {} is not finite or exceeds the float16 range",
                            doc_ids.get(doc).map(String::as_str).unwrap_or("?"),
                            i % dim,
                            values[i]
                        ),
                    ));
                }
                Ok(converted)
            })
            .collect();
        for task in tasks {
            writer.push_slice(&task?)?;
        }
        progress.advance((end - step) as u64);
    }
    progress.finish();
    writer.finish()
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
