//! Whole-array invariant checks run when an index is opened (postings below the document
//! count and ascending, weights finite and positive, ids below their bounds). They read every
//! element of the sparse arrays, hundreds of millions at a million documents, so each check is
//! branch-free within a chunk (it vectorizes) and chunks run in parallel on the rayon pool
//! (with a cold page cache, every core then waits on its own part of the disk reads).

use rayon::prelude::*;

/// Elements per parallel chunk: large enough that a chunk's set-up is negligible, small enough
/// that two cores share a few-hundred-megabyte array evenly.
const CHUNK: usize = 1 << 18;

/// Whether every value is below `bound`.
pub fn all_below<T: Copy + Into<u64> + Sync>(values: &[T], bound: u64) -> bool {
    values
        .par_chunks(CHUNK)
        .all(|chunk| chunk.iter().fold(true, |ok, &v| ok & (v.into() < bound)))
}

/// Whether every value is finite and > 0.
pub fn all_positive(values: &[f32]) -> bool {
    values.par_chunks(CHUNK).all(|chunk| {
        chunk
            .iter()
            .fold(true, |ok, &w| ok & w.is_finite() & (w > 0.0))
    })
}

/// Whether `values` is strictly ascending (branch-free: it vectorizes).
pub fn strictly_ascending(values: &[u32]) -> bool {
    values.windows(2).fold(true, |ok, w| ok & (w[0] < w[1]))
}

/// The first of the `lists` (given by `offsets`, `lists + 1` ascending positions into `values`)
/// that is not strictly ascending, checking lists in parallel.
pub fn first_unordered_list(offsets: &[u64], values: &[u32]) -> Option<usize> {
    (0..offsets.len().saturating_sub(1))
        .into_par_iter()
        .with_min_len(256)
        .find_first(|&i| {
            let range = offsets[i] as usize..offsets[i + 1] as usize;
            !strictly_ascending(&values[range])
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_check_finds_a_single_bad_value_anywhere() {
        let n = 3 * CHUNK + 17;
        let ids: Vec<u32> = (0..n as u32).collect();
        assert!(all_below(&ids, n as u64));
        assert!(!all_below(&ids, n as u64 - 1));
        assert!(strictly_ascending(&ids));
        let weights = vec![0.5f32; n];
        assert!(all_positive(&weights));
        for at in [0, CHUNK - 1, CHUNK, 2 * CHUNK + 5, n - 1] {
            for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
                let mut w = weights.clone();
                w[at] = bad;
                assert!(!all_positive(&w), "{bad} at {at}");
            }
            let mut unordered = ids.clone();
            unordered[at] = if at == 0 { 1 } else { unordered[at - 1] };
            assert!(!strictly_ascending(&unordered), "at {at}");
        }
    }

    #[test]
    fn the_first_unordered_list_is_named() {
        // Lists [0, 1, 2], [], [5, 4], [7], [9, 9].
        let values = [0, 1, 2, 5, 4, 7, 9, 9];
        let offsets = [0, 3, 3, 5, 6, 8];
        assert_eq!(first_unordered_list(&offsets, &values), Some(2));
        assert_eq!(first_unordered_list(&offsets[..3], &values[..3]), None);
        assert_eq!(first_unordered_list(&[0], &[]), None);
    }
}
