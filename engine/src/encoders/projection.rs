//! The affine projection of token vectors: subtract a mean, multiply by a matrix (then the
//! encoder L2-normalises).

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use tandem_data::npy::{NpyArray, NpyDType};

/// `y = (x − mean) · W` for `x` of `in_dim` values and `W` of `[in_dim, out_dim]`.
#[derive(Debug, Clone)]
pub struct Projection {
    mean: Vec<f32>,
    matrix: Vec<f32>,
    out_dim: usize,
    files: (PathBuf, PathBuf),
}

/// All values of a float `.npy` array, checked finite.
fn read_floats(array: &NpyArray) -> Result<Vec<f32>> {
    let path = array.path().display().to_string();
    if !matches!(array.dtype(), NpyDType::F32 | NpyDType::F16) {
        return Err(Error::bad_input(
            path,
            format!("expected float32 or float16, got {}", array.dtype().name()),
        ));
    }
    let rows = array.shape().first().copied().unwrap_or(0);
    let mut values = Vec::new();
    array.rows_f32(0..rows, None, &mut values)?;
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::bad_input(
            format!("{path}: element {i}"),
            format!("value {} is not finite", values[i]),
        ));
    }
    Ok(values)
}

impl Projection {
    /// Reads the mean (`[in_dim]`) and the matrix (`[in_dim, out_dim]`) from `.npy` files.
    pub fn load(mean_path: &Path, matrix_path: &Path) -> Result<Self> {
        let mean_array = NpyArray::open(mean_path)?;
        let matrix_array = NpyArray::open(matrix_path)?;
        let (in_dim, out_dim) = matrix_array.matrix_shape()?;
        if mean_array.shape() != [in_dim] {
            return Err(Error::bad_input(
                mean_path.display().to_string(),
                format!(
                    "shape {:?} does not match the matrix {} of shape [{in_dim}, {out_dim}]: expected [{in_dim}]",
                    mean_array.shape(),
                    matrix_path.display()
                ),
            ));
        }
        if out_dim == 0 {
            return Err(Error::bad_input(
                matrix_path.display().to_string(),
                "the matrix has no output columns",
            ));
        }
        Ok(Projection {
            mean: read_floats(&mean_array)?,
            matrix: read_floats(&matrix_array)?,
            out_dim,
            files: (mean_path.to_path_buf(), matrix_path.to_path_buf()),
        })
    }

    /// Builds a projection from values in memory (`matrix` row-major `[mean.len(), out_dim]`).
    pub fn new(mean: Vec<f32>, matrix: Vec<f32>, out_dim: usize) -> Result<Self> {
        if out_dim == 0 || mean.len() * out_dim != matrix.len() {
            return Err(Error::invalid(
                "projection",
                format!(
                    "a [{}, {out_dim}] matrix needs {} values, got {}",
                    mean.len(),
                    mean.len() * out_dim,
                    matrix.len()
                ),
            ));
        }
        Ok(Projection {
            mean,
            matrix,
            out_dim,
            files: Default::default(),
        })
    }

    /// The mean and matrix files (empty for one built in memory).
    pub fn files(&self) -> (&Path, &Path) {
        (&self.files.0, &self.files.1)
    }

    /// Input values per vector.
    pub fn in_dim(&self) -> usize {
        self.mean.len()
    }

    /// Output values per vector.
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// Projects the rows of `x` (`in_dim` values each) into `out` (`out_dim` values each).
    pub fn apply(&self, x: &[f32], out: &mut Vec<f32>) {
        let rows = x.len() / self.in_dim().max(1);
        out.clear();
        out.resize(rows * self.out_dim, 0.0);
        for (src, dst) in x
            .chunks_exact(self.in_dim())
            .zip(out.chunks_exact_mut(self.out_dim))
        {
            for ((&v, &m), w) in src
                .iter()
                .zip(&self.mean)
                .zip(self.matrix.chunks_exact(self.out_dim))
            {
                let centred = v - m;
                for (d, &wj) in dst.iter_mut().zip(w) {
                    *d += centred * wj;
                }
            }
        }
    }
}

/// Scales each row of `values` (`dim` values each) to unit L2 norm; an all-zero row stays zero.
pub fn normalize_rows(values: &mut [f32], dim: usize) {
    for row in values.chunks_exact_mut(dim.max(1)) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|v| *v /= norm);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_matches_the_definition() {
        // mean [1, 2, 3], W = [[1, 0], [0, 1], [1, -1]] (3 × 2)
        let p =
            Projection::new(vec![1.0, 2.0, 3.0], vec![1.0, 0.0, 0.0, 1.0, 1.0, -1.0], 2).unwrap();
        let mut out = Vec::new();
        p.apply(&[2.0, 4.0, 6.0, 1.0, 2.0, 3.0], &mut out);
        // (1, 2, 3) · W = (1 + 3, 2 − 3); the second row centres to zero
        assert_eq!(out, vec![4.0, -1.0, 0.0, 0.0]);
        normalize_rows(&mut out, 2);
        let n = 17f32.sqrt();
        assert_eq!(out, vec![4.0 / n, -1.0 / n, 0.0, 0.0]);
    }

    #[test]
    fn mismatched_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mean = dir.path().join("mean.npy");
        let w = dir.path().join("w.npy");
        tandem_data::npy::write_f32(&mean, &[4], &[0.0; 4]).unwrap();
        tandem_data::npy::write_f32(&w, &[3, 2], &[0.0; 6]).unwrap();
        let err = Projection::load(&mean, &w).unwrap_err().to_string();
        assert!(
            err.contains("mean.npy") && err.contains("expected [3]"),
            "{err}"
        );
        tandem_data::npy::write_f32(&mean, &[3], &[0.0, f32::NAN, 0.0]).unwrap();
        let err = Projection::load(&mean, &w).unwrap_err().to_string();
        assert!(
            err.contains("element 1") && err.contains("not finite"),
            "{err}"
        );
    }
}
