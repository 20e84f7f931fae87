//! Filters and deletes on the command line: id files (one external id per line) and filter
//! expressions, checked before anything is sent.

use anyhow::Context;
use std::path::{Path, PathBuf};
use tandem_proto::v1::{IdSet, SearchRequest};

/// Reads an id file: one external document id per line; a trailing `\r` is dropped and empty
/// lines are skipped. Errors name the file and line.
pub fn read_ids(path: &Path) -> anyhow::Result<Vec<String>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut ids = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = std::str::from_utf8(line)
            .with_context(|| format!("{}:{}: not UTF-8", path.display(), i + 1))?;
        let id = line.strip_suffix('\r').unwrap_or(line);
        if !id.trim().is_empty() {
            ids.push(id.to_string());
        }
    }
    Ok(ids)
}

/// Filter flags (`tandem search`, `tandem-bench load`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Only return documents whose ids are in this file (one id per line).
    #[arg(long, value_name = "FILE")]
    pub filter_ids: Option<PathBuf>,
    /// Never return documents whose ids are in this file (one id per line).
    #[arg(long, value_name = "FILE")]
    pub exclude_ids: Option<PathBuf>,
    /// Only return documents whose attributes match this expression, e.g.
    /// `lang = "en" AND year >= 2018 AND NOT tags IN ("draft")`.
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
}

/// A filter as sent with every query of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestFilter {
    /// The include set, when given.
    pub include: Option<Vec<String>>,
    /// The exclude set.
    pub exclude: Vec<String>,
    /// The attribute expression (empty: none).
    pub expr: String,
}

impl FilterArgs {
    /// Reads the id files. The expression is sent as given: the server parses it and checks
    /// attribute names and kinds against its index, and a fault comes back as
    /// `INVALID_ARGUMENT` naming the column.
    pub fn load(&self) -> anyhow::Result<RequestFilter> {
        let expr = self.filter.clone().unwrap_or_default();
        Ok(RequestFilter {
            include: self.filter_ids.as_deref().map(read_ids).transpose()?,
            exclude: match &self.exclude_ids {
                Some(path) => read_ids(path)?,
                None => Vec::new(),
            },
            expr,
        })
    }
}

impl RequestFilter {
    /// Sets the filter fields of `request`.
    pub fn apply(&self, request: &mut SearchRequest) {
        request.include_ids = self.include.clone().map(|ids| IdSet { ids });
        request.exclude_ids = (!self.exclude.is_empty()).then(|| IdSet {
            ids: self.exclude.clone(),
        });
        request.filter = self.expr.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_files_skip_blank_lines_and_name_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ids.txt");
        std::fs::write(&path, b"a\r\n\nb c\n  \n").unwrap();
        assert_eq!(read_ids(&path).unwrap(), vec!["a", "b c"]);
        std::fs::write(&path, b"a\n\xff\n").unwrap();
        let err = format!("{:#}", read_ids(&path).unwrap_err());
        assert!(err.contains("ids.txt:2: not UTF-8"), "{err}");
    }
}
