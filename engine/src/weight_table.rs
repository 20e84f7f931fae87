//! Per-token weight tables for inference-free sparse query encoding (see
//! `encoders::TableSparseEncoder`): derived from an index, written as JSON `{"token": weight}`.

use crate::error::{Error, Result};
use crate::index::Index;
use std::io::Write;
use std::path::Path;

/// The IDF of every term of `index` from its posting lists, in the BM25 form
/// `ln(1 + (N − df + 0.5) / (df + 0.5))` (always > 0; terms without postings are left out),
/// as `(term, weight)` in term id order.
pub fn idf_table(index: &Index) -> Vec<(String, f32)> {
    let n = index.doc_count() as f64;
    (0..index.vocab_size() as u32)
        .filter_map(|term| {
            let df: usize = index
                .segments()
                .iter()
                .filter(|s| (term as usize) < s.vocab_size())
                .map(|s| s.postings().postings(term).0.len())
                .sum();
            let df = df as f64;
            let token = index.term(term)?;
            (df > 0.0).then(|| {
                let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
                (token.to_string(), idf as f32)
            })
        })
        .collect()
}

/// Writes `table` as a JSON object `{"token": weight}` to `path`, atomically (a temporary file
/// beside it, fsynced, then renamed).
pub fn write_json_table(path: &Path, table: &[(String, f32)]) -> Result<()> {
    let map: serde_json::Map<String, serde_json::Value> = table
        .iter()
        .map(|(t, w)| (t.clone(), serde_json::Value::from(*w)))
        .collect();
    let text = serde_json::to_vec_pretty(&map).map_err(|e| Error::io(path, e.into()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(&text)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_round_trips_through_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("idf.json");
        let table = vec![("a".to_string(), 1.5f32), ("##b".to_string(), 0.25)];
        write_json_table(&path, &table).unwrap();
        let back: std::collections::BTreeMap<String, f32> =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!((back["a"], back["##b"]), (1.5, 0.25));
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file is left");
        let err = write_json_table(&dir.path().join("missing/idf.json"), &table).unwrap_err();
        assert!(err.to_string().contains("missing/idf.json"), "{err}");
    }
}
