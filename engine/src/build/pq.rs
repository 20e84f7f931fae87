//! Training the product-quantization codebook of a `--codec pq` build on a sample of the input
//! token vectors.

use crate::build::Progress;
use crate::error::Result;
use crate::pq::{Codebook, TrainParams};
use half::f16;
use tandem_data::npy::NpyArray;

/// Trains a codebook with `params` on at most `params.sample` token vectors spread evenly over
/// all rows of `vectors` (row `⌊i · rows / n⌋` for `i` in `0..n`), int8 input scaled by
/// `int8_scale`. Rows with a value that is not finite in f16 are left out (the conversion
/// reports them).
pub fn train_codebook(
    vectors: &NpyArray,
    int8_scale: Option<f32>,
    params: &TrainParams,
    progress: &dyn Progress,
) -> Result<Codebook> {
    let (rows, dim) = vectors.matrix_shape()?;
    let n = rows.min(params.sample);
    progress.start("train PQ codebook", 1);
    let mut sample = Vec::with_capacity(n * dim);
    let mut row = Vec::with_capacity(dim);
    for i in 0..n {
        let r = i * rows / n;
        vectors.rows_f32(r..r + 1, int8_scale, &mut row)?;
        if row.iter().all(|&v| f16::from_f32(v).is_finite()) {
            sample.extend_from_slice(&row);
        }
    }
    let codebook = Codebook::train(&sample, dim, params);
    progress.advance(1);
    progress.finish();
    Ok(codebook)
}
