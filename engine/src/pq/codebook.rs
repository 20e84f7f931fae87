//! A product-quantization codebook: the split of the dimensions into subspaces, each
//! subspace's [`CENTROIDS`] centroids, encoding token vectors to codes and a scale, and decoding
//! them into the packed int8 layout of the MaxSim kernels.

use super::kmeans::{self, Centroids};
use super::TrainParams;
use crate::kernels::{packed_len, packed_scales_len, BLOCK};
use half::f16;
use rayon::prelude::*;

/// Centroids per subspace: every code is one byte.
pub const CENTROIDS: usize = 256;

/// Largest magnitude of a decoded centroid value: values are in `[−127, 127]`.
const LEVELS: f32 = 127.0;

/// The trained centroids of every subspace, and the decoding tables derived from them.
#[derive(Debug, Clone)]
pub struct Codebook {
    dim: usize,
    /// Subspace `s` covers dimensions `bounds[s]..bounds[s + 1]`.
    bounds: Vec<usize>,
    /// Per subspace, its [`CENTROIDS`] centroids.
    subspaces: Vec<Centroids>,
    /// Per dimension `j`, the value in dimension `j` of every centroid of `j`'s subspace, in
    /// steps of `steps[j]`: `table[j][code]`.
    table: Vec<[i8; CENTROIDS]>,
    /// Per dimension `j`, the step of its table: `max |centroid value| / 127` over the
    /// dimension (0 when all are 0).
    steps: Vec<f32>,
    /// Per dimension, the index of its subspace.
    subspace_of: Vec<usize>,
}

/// The split of `dim` dimensions into `subspaces` contiguous subspaces of nearly equal width:
/// subspace `s` covers `⌊s · dim / subspaces⌋ .. ⌊(s + 1) · dim / subspaces⌋` (`subspaces + 1`
/// bounds; `subspaces` must be in `1..=dim` for every subspace to be non-empty).
pub fn split(dim: usize, subspaces: usize) -> Vec<usize> {
    (0..=subspaces).map(|s| s * dim / subspaces).collect()
}

impl Codebook {
    /// Trains a codebook on `sample` (token vectors of dimension `dim`, row-major, all finite):
    /// `min(params.subspaces, dim)` subspaces of [`split`], each clustered by [`kmeans::train`]
    /// into [`CENTROIDS`] centroids with seed `params.seed + s` for subspace `s`, the subspaces
    /// in parallel. The result depends only on the arguments.
    ///
    /// # Panics
    ///
    /// If `dim` or `params.subspaces` is 0, or `sample.len()` is not a multiple of `dim`.
    pub fn train(sample: &[f32], dim: usize, params: &TrainParams) -> Codebook {
        assert!(
            dim > 0 && params.subspaces > 0 && sample.len().is_multiple_of(dim),
            "codebook: bad training shape"
        );
        let bounds = split(dim, params.subspaces.min(dim));
        let subspaces = bounds
            .par_windows(2)
            .enumerate()
            .map(|(s, w)| {
                let points: Vec<f32> = sample
                    .chunks_exact(dim)
                    .flat_map(|row| &row[w[0]..w[1]])
                    .copied()
                    .collect();
                let seed = params.seed.wrapping_add(s as u64);
                kmeans::train(&points, w[1] - w[0], CENTROIDS, params.iterations, seed)
            })
            .collect();
        Codebook::assemble(dim, bounds, subspaces)
    }

    /// A codebook read back from its stored form: `bounds` as [`Codebook::bounds`] gives them
    /// and `centroids` as [`Codebook::centroids`] does. Refuses, with the reason, bounds that do
    /// not split `0..dim` into non-empty ascending subspaces, a centroid count other than
    /// [`CENTROIDS`] · `dim`, and values that are not finite.
    pub fn from_parts(dim: usize, bounds: &[u32], centroids: &[f32]) -> Result<Codebook, String> {
        let bounds: Vec<usize> = bounds.iter().map(|&b| b as usize).collect();
        let splits = bounds.len() >= 2
            && bounds.first() == Some(&0)
            && bounds.last() == Some(&dim)
            && bounds.windows(2).all(|w| w[0] < w[1]);
        if !splits {
            return Err(format!(
                "subspace bounds {bounds:?} do not split dimensions 0..{dim} into ascending \
                 non-empty ranges"
            ));
        }
        if Some(centroids.len()) != dim.checked_mul(CENTROIDS) {
            return Err(format!(
                "{} centroid values, expected {CENTROIDS} per dimension of {dim}",
                centroids.len()
            ));
        }
        if let Some(i) = centroids.iter().position(|v| !v.is_finite()) {
            return Err(format!(
                "centroid value {i} ({}) is not finite",
                centroids[i]
            ));
        }
        let subspaces = bounds
            .windows(2)
            .map(|w| {
                let values = &centroids[w[0] * CENTROIDS..w[1] * CENTROIDS];
                Centroids::from_rows(values.to_vec(), w[1] - w[0])
            })
            .collect();
        Ok(Codebook::assemble(dim, bounds, subspaces))
    }

    /// Derives the decoding tables: each dimension's centroid values rounded to steps of
    /// `max |value| / 127`.
    fn assemble(dim: usize, bounds: Vec<usize>, subspaces: Vec<Centroids>) -> Codebook {
        let mut table = vec![[0i8; CENTROIDS]; dim];
        let mut steps = vec![0.0f32; dim];
        let mut subspace_of = vec![0; dim];
        for (s, (w, centroids)) in bounds.windows(2).zip(&subspaces).enumerate() {
            let width = w[1] - w[0];
            let rows = centroids.rows();
            for k in 0..width {
                let column = rows.iter().skip(k).step_by(width);
                let step = column.clone().fold(0.0f32, |a, v| a.max(v.abs())) / LEVELS;
                if step > 0.0 {
                    for (entry, &value) in table[w[0] + k].iter_mut().zip(column) {
                        *entry = (value / step).round().clamp(-LEVELS, LEVELS) as i8;
                    }
                }
                steps[w[0] + k] = step;
            }
            subspace_of[w[0]..w[1]].fill(s);
        }
        Codebook {
            dim,
            bounds,
            subspaces,
            table,
            steps,
            subspace_of,
        }
    }

    /// Dimensions of a token vector.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of subspaces: the codes (bytes) per token.
    pub fn subspaces(&self) -> usize {
        self.subspaces.len()
    }

    /// The subspace bounds, stored form: `subspaces + 1` ascending dimensions from 0 to `dim`.
    pub fn bounds(&self) -> Vec<u32> {
        self.bounds.iter().map(|&b| b as u32).collect()
    }

    /// The centroids, stored form: [`CENTROIDS`] · `dim` values, subspace after subspace, each
    /// subspace its centroids in code order, each centroid its values in dimension order (so
    /// subspace `s` starts at `bounds[s] · CENTROIDS`).
    pub fn centroids(&self) -> Vec<f32> {
        self.subspaces
            .iter()
            .flat_map(|c| c.rows().iter().copied())
            .collect()
    }

    /// The per-dimension steps of the decoding tables: the decoded value of dimension `j` is
    /// `steps[j] · table[j][code] · scale` (see [`Codebook::decode_packed`]).
    pub fn steps(&self) -> &[f32] {
        &self.steps
    }

    /// Appends the codes of `row` (`dim` values) to `out` and returns its scale: per subspace,
    /// the index of the nearest centroid; then the factor that brings the decoded vector `x̂`
    /// (scale 1) closest to `row`, `(row · x̂) / (x̂ · x̂)` (1 when `x̂` is 0), rounded to f16 and
    /// kept within its finite range. The scale restores the length the centroids' averaging
    /// takes from a vector, which otherwise biases its dot products.
    ///
    /// # Panics
    ///
    /// If `row.len() != dim`.
    pub fn encode(&self, row: &[f32], out: &mut Vec<u8>) -> f16 {
        assert_eq!(row.len(), self.dim, "encode: row length is not dim");
        let start = out.len();
        out.extend(
            self.bounds
                .windows(2)
                .zip(&self.subspaces)
                .map(|(w, centroids)| centroids.nearest(&row[w[0]..w[1]]) as u8),
        );
        let codes = &out[start..];
        let (mut cross, mut square) = (0.0f64, 0.0f64);
        for (j, &x) in row.iter().enumerate() {
            let decoded =
                self.steps[j] * f32::from(self.table[j][codes[self.subspace_of[j]] as usize]);
            cross += f64::from(x) * f64::from(decoded);
            square += f64::from(decoded) * f64::from(decoded);
        }
        let scale = if square > 0.0 { cross / square } else { 1.0 };
        f16::from_f64(scale.clamp(-f64::from(f16::MAX), f64::from(f16::MAX)))
    }

    /// Replaces `values` and `out_scales` with the packed int8 layout of
    /// [`crate::kernels::int8`] of the document whose `m` tokens have `codes`
    /// (`m · subspaces` bytes, token after token) and `scales`: token `t`, dimension `j` holds
    /// `table[j][codes[t · subspaces + s]]` for `j`'s subspace `s`, and the token's scale is
    /// `scales[t]`. The decoded vector is the int8 layout's value times the dimension's step
    /// (see [`Codebook::steps`]): `steps[j] · value · scale`. Padding has scale 0 and arbitrary
    /// values (which the kernels ignore).
    ///
    /// # Panics
    ///
    /// If `codes.len() != m · subspaces` or `scales.len() != m`.
    pub fn decode_packed(
        &self,
        codes: &[u8],
        scales: &[f16],
        m: usize,
        values: &mut Vec<i8>,
        out_scales: &mut Vec<f32>,
    ) {
        let subspaces = self.subspaces();
        assert!(
            Some(codes.len()) == m.checked_mul(subspaces) && scales.len() == m,
            "decode: codes or scales do not match {m} tokens"
        );
        values.clear();
        values.resize(packed_len(m, self.dim), 0);
        out_scales.clear();
        out_scales.extend(scales.iter().map(|s| s.to_f32()));
        out_scales.resize(packed_scales_len(m), 0.0);
        // Per block, the codes by subspace (`by_subspace[s][i]`: token `i`'s code of subspace
        // `s`), then dimension-major like the layout: each dimension's 16 values are lookups in
        // one table with the 16 codes of that dimension's subspace.
        let mut by_subspace = vec![[0u8; BLOCK]; subspaces];
        for (block, block_codes) in values
            .chunks_exact_mut(BLOCK * self.dim)
            .zip(codes.chunks(BLOCK * subspaces))
        {
            for (i, token_codes) in block_codes.chunks_exact(subspaces).enumerate() {
                for (lanes, &code) in by_subspace.iter_mut().zip(token_codes) {
                    lanes[i] = code;
                }
            }
            // The padding of a last, partial block decodes stale codes; its scales are 0.
            for ((lanes, table), &s) in block
                .chunks_exact_mut(BLOCK)
                .zip(&self.table)
                .zip(&self.subspace_of)
            {
                for (value, &code) in lanes.iter_mut().zip(&by_subspace[s]) {
                    *value = table[code as usize];
                }
            }
        }
    }
}
