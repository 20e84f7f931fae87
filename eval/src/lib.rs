//! `tandem-eval`: retrieval quality measures, shared by `tandem-bench` and the end-to-end tests.
//!
//! Evaluation of TREC runs against TREC qrels with `trec_eval` 9.x semantics.
//!
//! Computes nDCG@10 (`ndcg_cut_10`), Recall@10 (`recall_10`), Recall@100
//! (`recall_100`), MRR@10 and MRR (`recip_rank`), per query and averaged.
//!
//! The rules follow `trec_eval`:
//! - the documents of a query are ranked by score, highest first; equal scores are
//!   ordered by docid in *decreasing* byte-wise (`strcmp`) order, and the rank
//!   column of a run file is ignored;
//! - a document is relevant when its qrels value is at least 1; unjudged documents
//!   count as non-relevant;
//! - nDCG uses the relevance value as the gain (linear gain), the discount
//!   `log2(rank + 1)`, and an ideal ranking built from the query's positive qrels
//!   values sorted in decreasing order;
//! - averages are taken over the qrels queries that are in the run (a query judged only
//!   non-relevant scores 0); in complete mode (`trec_eval -c`) over every qrels query, a
//!   query missing from the run scoring 0.

#![warn(missing_docs)]

use std::cmp::Ordering;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

/// Relevance judgments: for each query id, the judged docids and their relevance.
#[derive(Debug, Clone, Default)]
pub struct Qrels {
    queries: BTreeMap<String, HashMap<String, i64>>,
}

impl Qrels {
    /// Reads a qrels file (`qid iter docid rel` per line).
    pub fn from_path(path: &Path) -> Result<Qrels> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read qrels file {}", path.display()))?;
        Qrels::parse(&text, &path.display().to_string())
    }

    /// Parses qrels text; `origin` names the source in error messages.
    ///
    /// Each non-empty line must have exactly four whitespace-separated fields
    /// `qid iter docid rel`, with `rel` an integer (0 and negative values are allowed
    /// and mean "not relevant"). A docid judged twice for the same query is an error.
    pub fn parse(text: &str, origin: &str) -> Result<Qrels> {
        let mut lines_of: BTreeMap<String, HashMap<String, (i64, usize)>> = BTreeMap::new();
        for (line, fields) in data_lines(text) {
            let [qid, _iter, docid, rel] = fields[..] else {
                bail!(
                    "{origin}:{line}: expected 4 fields (qid iter docid rel), found {}",
                    fields.len()
                );
            };
            let rel: i64 = rel
                .parse()
                .map_err(|_| anyhow!("{origin}:{line}: field 4 (rel) {rel:?} is not an integer"))?;
            match lines_of
                .entry(qid.to_string())
                .or_default()
                .entry(docid.to_string())
            {
                Entry::Occupied(first) => bail!(
                    "{origin}:{line}: query {qid:?} judges doc {docid:?} again (first on line {})",
                    first.get().1
                ),
                Entry::Vacant(slot) => {
                    slot.insert((rel, line));
                }
            }
        }
        let queries = lines_of
            .into_iter()
            .map(|(qid, docs)| {
                let docs = docs.into_iter().map(|(d, (rel, _))| (d, rel)).collect();
                (qid, docs)
            })
            .collect();
        Ok(Qrels { queries })
    }
}

/// A run: for each query id, the retrieved docids with their scores, kept in
/// `trec_eval` rank order (score descending, ties by docid descending).
#[derive(Debug, Clone, Default)]
pub struct Run {
    queries: BTreeMap<String, Vec<(String, f64)>>,
}

impl Run {
    /// Reads a run file (`qid Q0 docid rank score tag` per line).
    pub fn from_path(path: &Path) -> Result<Run> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read run file {}", path.display()))?;
        Run::parse(&text, &path.display().to_string())
    }

    /// Parses run text; `origin` names the source in error messages.
    ///
    /// Each non-empty line must have exactly six whitespace-separated fields
    /// `qid Q0 docid rank score tag`; `score` must be a number (not NaN). The `Q0`,
    /// `rank` and `tag` fields are ignored, as `trec_eval` does. A docid listed twice
    /// for the same query is an error naming both lines.
    pub fn parse(text: &str, origin: &str) -> Result<Run> {
        let mut queries: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
        let mut seen: HashMap<(String, String), usize> = HashMap::new();
        for (line, fields) in data_lines(text) {
            let [qid, _q0, docid, _rank, score, _tag] = fields[..] else {
                bail!(
                    "{origin}:{line}: expected 6 fields (qid Q0 docid rank score tag), found {}",
                    fields.len()
                );
            };
            let score = score
                .parse::<f64>()
                .ok()
                .filter(|s| !s.is_nan())
                .ok_or_else(|| {
                    anyhow!("{origin}:{line}: field 5 (score) {score:?} is not a number")
                })?;
            match seen.entry((qid.to_string(), docid.to_string())) {
                Entry::Occupied(first) => bail!(
                    "{origin}:{line}: query {qid:?} lists doc {docid:?} again (first on line {})",
                    first.get()
                ),
                Entry::Vacant(slot) => {
                    slot.insert(line);
                }
            }
            queries
                .entry(qid.to_string())
                .or_default()
                .push((docid.to_string(), score));
        }
        Ok(Run::sorted(queries))
    }

    /// Builds a run from in-memory results: `(qid, [(docid, score), ...])`.
    ///
    /// As with a run file, the list order is ignored and the scores decide the ranking
    /// (ties by docid descending), so the result equals writing the lists to a run
    /// file and parsing it. A repeated docid within a query keeps its first entry; a
    /// repeated qid adds to that query; a query with no documents is left out (like a
    /// query absent from a run file); a NaN score ranks below every other score.
    pub fn from_ranked(list: impl IntoIterator<Item = (String, Vec<(String, f64)>)>) -> Run {
        let mut queries: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
        let mut seen: HashSet<(String, String)> = HashSet::new();
        for (qid, docs) in list {
            for (docid, score) in docs {
                if seen.insert((qid.clone(), docid.clone())) {
                    queries.entry(qid.clone()).or_default().push((docid, score));
                }
            }
        }
        Run::sorted(queries)
    }

    fn sorted(mut queries: BTreeMap<String, Vec<(String, f64)>>) -> Run {
        for docs in queries.values_mut() {
            docs.sort_by(trec_order);
        }
        Run { queries }
    }
}

/// `trec_eval`'s ranking: score descending, then docid descending (`strcmp`).
fn trec_order(a: &(String, f64), b: &(String, f64)) -> Ordering {
    score_key(b.1)
        .total_cmp(&score_key(a.1))
        .then_with(|| b.0.cmp(&a.0))
}

/// Makes scores totally ordered the way C comparisons see them: `-0.0 == 0.0`, and
/// NaN (only possible through [`Run::from_ranked`]) sorts last.
fn score_key(score: f64) -> f64 {
    if score.is_nan() {
        f64::NEG_INFINITY
    } else if score == 0.0 {
        0.0
    } else {
        score
    }
}

/// Non-empty lines with their 1-based line numbers, split on whitespace.
fn data_lines(text: &str) -> impl Iterator<Item = (usize, Vec<&str>)> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.split_whitespace().collect::<Vec<_>>()))
        .filter(|(_, fields)| !fields.is_empty())
}

/// The measures of one query.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryMetrics {
    /// Query id.
    pub qid: String,
    /// nDCG at cutoff 10 (`trec_eval` `ndcg_cut_10`).
    pub ndcg_at_10: f64,
    /// Relevant documents in the top 10 over all relevant documents (`recall_10`).
    pub recall_at_10: f64,
    /// Relevant documents in the top 100 over all relevant documents (`recall_100`).
    pub recall_at_100: f64,
    /// 1 / rank of the first relevant document if it is in the top 10, else 0.
    pub mrr_at_10: f64,
    /// 1 / rank of the first relevant document anywhere, else 0 (`recip_rank`).
    pub mrr: f64,
}

/// Averaged measures of a run, with the per-query values they were averaged from.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    /// Number of queries averaged over (`trec_eval` `num_q`).
    pub queries: usize,
    /// Mean nDCG@10.
    pub ndcg_at_10: f64,
    /// Mean Recall@10.
    pub recall_at_10: f64,
    /// Mean Recall@100.
    pub recall_at_100: f64,
    /// Mean reciprocal rank cut at 10.
    pub mrr_at_10: f64,
    /// Mean reciprocal rank without cutoff.
    pub mrr: f64,
    /// The evaluated queries, sorted by qid (plain string order).
    pub per_query: Vec<QueryMetrics>,
}

/// Evaluates `run` against `qrels`.
///
/// As trec_eval does, every qrels query found in the run is evaluated (a query judged only
/// non-relevant scores 0 on every measure); run queries without qrels are ignored. Without
/// `complete`, qrels queries missing from the run are skipped; with `complete`
/// (`trec_eval -c`) they appear in `per_query` with all measures 0 and count in the
/// averages. With no evaluated query every mean is 0.
pub fn evaluate(run: &Run, qrels: &Qrels, complete: bool) -> Metrics {
    let zero = |qid: &str| QueryMetrics {
        qid: qid.to_string(),
        ndcg_at_10: 0.0,
        recall_at_10: 0.0,
        recall_at_100: 0.0,
        mrr_at_10: 0.0,
        mrr: 0.0,
    };
    let mut per_query = Vec::new();
    for (qid, judged) in &qrels.queries {
        let num_rel = judged.values().filter(|&&rel| rel >= 1).count();
        match run.queries.get(qid) {
            Some(ranked) if num_rel > 0 => {
                per_query.push(evaluate_query(qid, ranked, judged, num_rel))
            }
            Some(_) => per_query.push(zero(qid)),
            None if complete => per_query.push(zero(qid)),
            None => {}
        }
    }
    let mean = |measure: fn(&QueryMetrics) -> f64| {
        if per_query.is_empty() {
            0.0
        } else {
            per_query.iter().map(measure).sum::<f64>() / per_query.len() as f64
        }
    };
    Metrics {
        queries: per_query.len(),
        ndcg_at_10: mean(|q| q.ndcg_at_10),
        recall_at_10: mean(|q| q.recall_at_10),
        recall_at_100: mean(|q| q.recall_at_100),
        mrr_at_10: mean(|q| q.mrr_at_10),
        mrr: mean(|q| q.mrr),
        per_query,
    }
}

/// Measures one query; `ranked` is in rank order and `num_rel` is at least 1.
fn evaluate_query(
    qid: &str,
    ranked: &[(String, f64)],
    judged: &HashMap<String, i64>,
    num_rel: usize,
) -> QueryMetrics {
    let discount = |index: usize| ((index + 2) as f64).log2();
    let mut dcg = 0.0;
    let (mut hits_10, mut hits_100) = (0usize, 0usize);
    let mut first_relevant = None;
    for (index, (docid, _)) in ranked.iter().enumerate() {
        let rel = judged.get(docid).copied().unwrap_or(0);
        if rel < 1 {
            continue;
        }
        if index < 10 {
            dcg += rel as f64 / discount(index);
            hits_10 += 1;
        }
        if index < 100 {
            hits_100 += 1;
        }
        first_relevant.get_or_insert(index + 1);
    }
    let mut gains: Vec<i64> = judged.values().copied().filter(|&rel| rel >= 1).collect();
    gains.sort_unstable_by(|a, b| b.cmp(a));
    let ideal: f64 = gains
        .iter()
        .take(10)
        .enumerate()
        .map(|(index, &rel)| rel as f64 / discount(index))
        .sum();
    let mrr = first_relevant.map_or(0.0, |rank| 1.0 / rank as f64);
    QueryMetrics {
        qid: qid.to_string(),
        ndcg_at_10: dcg / ideal,
        recall_at_10: hits_10 as f64 / num_rel as f64,
        recall_at_100: hits_100 as f64 / num_rel as f64,
        mrr_at_10: if first_relevant.is_some_and(|rank| rank <= 10) {
            mrr
        } else {
            0.0
        },
        mrr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPS: f64 = 1e-12;

    fn close(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() < EPS,
            "got {actual}, expected {expected}"
        );
    }

    fn run_of(qid: &str, docs: &[(&str, f64)]) -> Run {
        let docs = docs.iter().map(|&(d, s)| (d.to_string(), s)).collect();
        Run::from_ranked([(qid.to_string(), docs)])
    }

    #[test]
    fn binary_relevance_at_ranks_one_and_three() {
        let qrels = Qrels::parse("q1 0 a 1\nq1 0 c 1\n", "qrels").unwrap();
        let run = run_of("q1", &[("a", 3.0), ("b", 2.0), ("c", 1.0)]);
        let m = evaluate(&run, &qrels, false);
        // DCG = 1 + 1/log2(4) = 1.5; IDCG = 1 + 1/log2(3).
        let ndcg = 1.5 / (1.0 + 1.0 / 3f64.log2());
        close(ndcg, 0.919_720_789_148_187_6);
        close(m.ndcg_at_10, ndcg);
        close(m.recall_at_10, 1.0);
        close(m.recall_at_100, 1.0);
        close(m.mrr_at_10, 1.0);
        close(m.mrr, 1.0);
        assert_eq!(m.queries, 1);
    }

    #[test]
    fn ties_are_broken_by_docid_descending() {
        let qrels = Qrels::parse("q 0 a 1\n", "qrels").unwrap();
        // All scores equal: order is c, b, a, so the relevant doc is at rank 3.
        let text = "q Q0 a 1 5.0 t\nq Q0 b 2 5.0 t\nq Q0 c 3 5.0 t\n";
        let m = evaluate(&Run::parse(text, "run").unwrap(), &qrels, false);
        close(m.mrr, 1.0 / 3.0);
        close(m.ndcg_at_10, 0.5);
        // Byte-wise, not numeric: "10" < "9", so "9" ranks first among ties.
        let qrels = Qrels::parse("q 0 10 1\n", "qrels").unwrap();
        let m = evaluate(&run_of("q", &[("10", 1.0), ("9", 1.0)]), &qrels, false);
        close(m.mrr, 0.5);
        // Scores beat docids, and -0.0 ties with 0.0.
        let m = evaluate(&run_of("q", &[("10", 0.0), ("9", -0.0)]), &qrels, false);
        close(m.mrr, 0.5);
        let m = evaluate(&run_of("q", &[("10", 0.1), ("9", 0.0)]), &qrels, false);
        close(m.mrr, 1.0);
    }

    #[test]
    fn graded_relevance_uses_linear_gain() {
        let qrels = Qrels::parse("q 0 a 1\nq 0 b 3\nq 0 c 2\nq 0 d 0\n", "qrels").unwrap();
        let run = run_of("q", &[("d", 4.0), ("a", 3.0), ("c", 2.0), ("b", 1.0)]);
        let m = evaluate(&run, &qrels, false);
        // DCG = 0 + 1/log2(3) + 2/log2(4) + 3/log2(5); IDCG = 3 + 2/log2(3) + 1/log2(4).
        let dcg = 1.0 / 3f64.log2() + 1.0 + 3.0 / 5f64.log2();
        let idcg = 3.0 + 2.0 / 3f64.log2() + 0.5;
        close(m.ndcg_at_10, dcg / idcg);
        close(m.ndcg_at_10, 0.613_827_313_344_108_6);
        close(m.mrr, 0.5);
        close(m.recall_at_10, 1.0);
    }

    #[test]
    fn cutoffs_at_10_and_100() {
        let qrels = Qrels::parse("q 0 d05 1\nq 0 d11 1\nq 0 d50 1\nq 0 x 1\n", "q").unwrap();
        let docs: Vec<(String, f64)> = (1..=150)
            .map(|i| (format!("d{i:02}"), 1000.0 - i as f64))
            .collect();
        let m = evaluate(&Run::from_ranked([("q".to_string(), docs)]), &qrels, false);
        close(m.recall_at_10, 0.25);
        close(m.recall_at_100, 0.75);
        close(m.mrr_at_10, 0.2);
        close(m.mrr, 0.2);
        let idcg = 1.0 + 1.0 / 3f64.log2() + 0.5 + 1.0 / 5f64.log2();
        close(m.ndcg_at_10, (1.0 / 6f64.log2()) / idcg);
        // First relevant doc at rank 11: MRR@10 is 0, plain MRR is 1/11.
        let mut docs: Vec<(String, f64)> = (1..=10)
            .map(|i| (format!("n{i:02}"), 100.0 - i as f64))
            .collect();
        docs.push(("d11".to_string(), 0.0));
        let m = evaluate(&Run::from_ranked([("q".to_string(), docs)]), &qrels, false);
        close(m.mrr_at_10, 0.0);
        close(m.mrr, 1.0 / 11.0);
        close(m.ndcg_at_10, 0.0);
        close(m.recall_at_10, 0.0);
        close(m.recall_at_100, 0.25);
    }

    #[test]
    fn zero_and_negative_rel_are_not_relevant() {
        let qrels = Qrels::parse("q 0 a 0\nq 0 b -1\nq 0 c 1\nz 0 a 0\n", "qrels").unwrap();
        let run = Run::from_ranked([
            (
                "q".to_string(),
                vec![("a".to_string(), 3.0), ("b".to_string(), 2.0)],
            ),
            ("z".to_string(), vec![("a".to_string(), 1.0)]),
        ]);
        let m = evaluate(&run, &qrels, false);
        // "z" has no relevant doc but is judged and in the run: evaluated, scoring 0 (as
        // trec_eval does); "q" finds nothing relevant.
        assert_eq!(m.queries, 2);
        assert_eq!(m.per_query[0].qid, "q");
        assert_eq!(m.per_query[1].qid, "z");
        close(m.ndcg_at_10, 0.0);
        close(m.recall_at_100, 0.0);
        close(m.mrr, 0.0);
    }

    #[test]
    fn complete_mode_counts_missing_queries_as_zero() {
        let qrels = Qrels::parse("q1 0 a 1\nq2 0 b 1\nq3 0 c 1\nq4 0 d 0\n", "qrels").unwrap();
        let run = Run::parse("q2 Q0 b 1 1 t\nq9 Q0 a 1 1 t\n", "run").unwrap();
        let m = evaluate(&run, &qrels, false);
        assert_eq!(m.queries, 1);
        close(m.ndcg_at_10, 1.0);
        let m = evaluate(&run, &qrels, true);
        assert_eq!(m.queries, 4);
        let qids: Vec<&str> = m.per_query.iter().map(|q| q.qid.as_str()).collect();
        assert_eq!(qids, ["q1", "q2", "q3", "q4"]);
        close(m.ndcg_at_10, 1.0 / 4.0);
        close(m.mrr_at_10, 1.0 / 4.0);
        close(m.recall_at_100, 1.0 / 4.0);
        close(m.per_query[0].ndcg_at_10, 0.0);
    }

    #[test]
    fn empty_evaluation_has_zero_means() {
        let qrels = Qrels::parse("q 0 a 1\n", "qrels").unwrap();
        let m = evaluate(&Run::default(), &qrels, false);
        assert_eq!(m.queries, 0);
        close(m.ndcg_at_10, 0.0);
        let m = evaluate(&run_of("q", &[]), &qrels, false);
        assert_eq!(m.queries, 0);
    }

    #[test]
    fn from_ranked_keeps_first_duplicate_and_ignores_order() {
        let qrels = Qrels::parse("q 0 a 1\n", "qrels").unwrap();
        let run = run_of("q", &[("b", 1.0), ("a", 2.0), ("a", 0.5)]);
        close(evaluate(&run, &qrels, false).mrr, 1.0);
    }

    #[test]
    fn parse_skips_empty_lines_and_counts_them() {
        let text = "\n  \nq Q0 a 1 1.5 t\r\n\nq Q0 b 2 abc t\n";
        let err = Run::parse(text, "run.trec").unwrap_err().to_string();
        assert_eq!(err, "run.trec:5: field 5 (score) \"abc\" is not a number");
    }

    #[test]
    fn parse_errors_name_line_and_field() {
        let err = |r: Result<Run>| r.unwrap_err().to_string();
        assert_eq!(
            err(Run::parse("q Q0 a 1 1 t\nq Q0 b 2 1\n", "r")),
            "r:2: expected 6 fields (qid Q0 docid rank score tag), found 5"
        );
        assert_eq!(
            err(Run::parse("q Q0 a 1 NaN t\n", "r")),
            "r:1: field 5 (score) \"NaN\" is not a number"
        );
        assert_eq!(
            err(Run::parse(
                "q Q0 a 1 1 t\nx Q0 a 1 1 t\nq Q0 a 3 0 t\n",
                "r"
            )),
            "r:3: query \"q\" lists doc \"a\" again (first on line 1)"
        );
        let err = |r: Result<Qrels>| r.unwrap_err().to_string();
        assert_eq!(
            err(Qrels::parse("q 0 a 1\n\nq 0 b 1.5\n", "qr")),
            "qr:3: field 4 (rel) \"1.5\" is not an integer"
        );
        assert_eq!(
            err(Qrels::parse("q 0 a 1 extra\n", "qr")),
            "qr:1: expected 4 fields (qid iter docid rel), found 5"
        );
        assert_eq!(
            err(Qrels::parse("q 0 a 1\nq 0 a 2\n", "qr")),
            "qr:2: query \"q\" judges doc \"a\" again (first on line 1)"
        );
    }

    #[test]
    fn from_path_names_missing_file() {
        let err = Qrels::from_path(Path::new("/nonexistent/qrels.trec")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/qrels.trec"));
    }
}
