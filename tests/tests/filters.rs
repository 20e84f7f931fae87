//! Query-time filters against brute force: the exact first stage over a filtered (and
//! partly deleted) index returns exactly the brute-force top κ of the admitted documents; the
//! approximate first stage returns only admitted documents and still fills κ whenever κ of them
//! match; the reference admitted sets are computed here from the documents' JSON, independently
//! of the engine's attribute index and expression evaluator.

use std::collections::{HashMap, HashSet};
use tandem_client::queries::QuerySet;
use tandem_engine::filter::{parse, Filter};
use tandem_engine::pipeline::FirstStage;
use tandem_engine::{Limits, Query, QueryVectors, SearchParams, Segment};
use tandem_tests::{synthetic_index_full, SyntheticIndex};

struct Doc {
    id: String,
    terms: HashMap<u32, f32>,
    attrs: Option<serde_json::Value>,
}

fn load_docs(synth: &SyntheticIndex, index: &Segment) -> Vec<Doc> {
    let text = std::fs::read_to_string(synth.corpus.join("docs.jsonl")).unwrap();
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let terms = v["vector"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(_, w)| w.as_f64().unwrap() > 0.0)
                .map(|(t, w)| (index.term_id(t).unwrap(), w.as_f64().unwrap() as f32))
                .collect();
            Doc {
                id: v["id"]
                    .as_str()
                    .map_or_else(|| v["id"].to_string(), str::to_string),
                terms,
                attrs: v.get("attrs").cloned(),
            }
        })
        .collect()
}

fn queries(synth: &SyntheticIndex, index: &Segment) -> Vec<Query> {
    let set = QuerySet::load(
        &synth.corpus.join("queries.jsonl"),
        Some(&synth.corpus.join("query_vectors.npy")),
        Some(&synth.corpus.join("query_lens.npy")),
    )
    .unwrap();
    (0..set.records.len())
        .map(|i| {
            let mut terms: Vec<(u32, f32)> = set.records[i]
                .terms
                .iter()
                .map(|(t, w)| (index.term_id(t).unwrap(), *w))
                .collect();
            terms.sort_unstable_by_key(|t| t.0);
            Query {
                terms,
                vectors: set.vectors.as_ref().map(|v| QueryVectors {
                    values: v[i].clone(),
                    dim: index.dim(),
                }),
                filter: Filter::default(),
            }
        })
        .collect()
}

/// Brute force over the admitted documents: score in query-term order, drop documents sharing
/// no term, sort by score then document order, keep `kappa`.
fn brute_force(
    docs: &[Doc],
    query: &Query,
    admitted: &dyn Fn(usize) -> bool,
    kappa: usize,
) -> Vec<(u32, f32)> {
    let mut scored: Vec<(u32, f32)> = docs
        .iter()
        .enumerate()
        .filter(|(d, _)| admitted(*d))
        .filter_map(|(d, doc)| {
            let mut score = 0f32;
            let mut touched = false;
            for (t, w) in &query.terms {
                if let Some(dw) = doc.terms.get(t) {
                    score += w * dw;
                    touched = true;
                }
            }
            touched.then_some((d as u32, score))
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.truncate(kappa);
    scored
}

/// A deterministic pseudo-random pick of about `fraction` of the documents.
fn pick(n: usize, fraction: f64, salt: u64) -> Vec<usize> {
    (0..n)
        .filter(|&i| {
            let h = (i as u64 ^ salt)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .rotate_left(29);
            (h % 100_000) as f64 / 100_000.0 < fraction
        })
        .collect()
}

fn attr<'a>(doc: &'a Doc, name: &str) -> Option<&'a serde_json::Value> {
    doc.attrs.as_ref().and_then(|a| a.get(name))
}

type Reference = Box<dyn Fn(&Doc, usize) -> bool>;

/// The filters checked, each with its reference predicate over (document, internal id).
fn cases(docs: &[Doc]) -> Vec<(String, Filter, Reference)> {
    let n = docs.len();
    let ids = |picked: &[usize]| {
        picked
            .iter()
            .map(|&i| docs[i].id.clone())
            .collect::<Vec<_>>()
    };
    let mut cases: Vec<(String, Filter, Reference)> = Vec::new();
    for (fraction, salt) in [(0.5, 1), (0.05, 2), (0.005, 3)] {
        let picked = pick(n, fraction, salt);
        let set: HashSet<usize> = picked.iter().copied().collect();
        let mut include = ids(&picked);
        include.push("no-such-document".to_string());
        cases.push((
            format!("include {:.1} %", fraction * 100.0),
            Filter {
                include: Some(include),
                ..Filter::default()
            },
            Box::new(move |_, d| set.contains(&d)),
        ));
    }
    let excluded = pick(n, 0.3, 4);
    let set: HashSet<usize> = excluded.iter().copied().collect();
    cases.push((
        "exclude 30 %".into(),
        Filter {
            exclude: ids(&excluded),
            ..Filter::default()
        },
        Box::new(move |_, d| !set.contains(&d)),
    ));
    let expr = |text: &str| Filter {
        expr: Some(parse(text).unwrap()),
        ..Filter::default()
    };
    let lang_en = |doc: &Doc| attr(doc, "lang").and_then(|v| v.as_str()) == Some("en");
    let year = |doc: &Doc| attr(doc, "year").and_then(|v| v.as_i64());
    let has_tag = |doc: &Doc, tag: &str| {
        attr(doc, "tags")
            .and_then(|v| v.as_array())
            .is_some_and(|tags| tags.iter().any(|t| t.as_str() == Some(tag)))
    };
    cases.push((
        "lang = en AND year >= 2010".into(),
        expr(r#"lang = "en" AND year >= 2010"#),
        Box::new(move |doc, _| lang_en(doc) && year(doc).is_some_and(|y| y >= 2010)),
    ));
    cases.push((
        "tags IN (five) OR NOT year < 2020".into(),
        expr("tags IN ('five') OR NOT year < 2020"),
        Box::new(move |doc, _| has_tag(doc, "five") || year(doc).is_none_or(|y| y >= 2020)),
    ));
    cases.push((
        "lang != en".into(),
        expr("lang != 'en'"),
        Box::new(move |doc, _| !lang_en(doc)),
    ));
    cases.push((
        "year = 2003 (0.5 %)".into(),
        expr("year = 2003 and tags = 'odd'"),
        Box::new(move |doc, _| year(doc) == Some(2003) && has_tag(doc, "odd")),
    ));
    let picked = pick(n, 0.5, 5);
    let included: HashSet<usize> = picked.iter().copied().collect();
    let excluded = pick(n, 0.2, 6);
    let exset: HashSet<usize> = excluded.iter().copied().collect();
    cases.push((
        "include 50 % AND expr AND exclude 20 %".into(),
        Filter {
            include: Some(ids(&picked)),
            exclude: ids(&excluded),
            expr: Some(parse("tags = 'even' or year in (2001, 2002)").unwrap()),
            include_docs: None,
        },
        Box::new(move |doc, d| {
            included.contains(&d)
                && !exset.contains(&d)
                && (has_tag(doc, "even") || matches!(year(doc), Some(2001 | 2002)))
        }),
    ));
    cases
}

fn check_all(synth: &SyntheticIndex, index: &Segment, deleted: &HashSet<usize>) {
    let docs = load_docs(synth, index);
    let queries = queries(synth, index);
    let knobs = index.manifest().approx.as_ref().unwrap().query_defaults;
    let kappa = 50;
    for (name, filter, reference) in cases(&docs) {
        let admitted = |d: usize| !deleted.contains(&d) && reference(&docs[d], d);
        let admitted_count = (0..docs.len()).filter(|&d| admitted(d)).count();
        assert!(admitted_count > 0, "{name}: nothing admitted");
        for (qi, base) in queries.iter().enumerate() {
            let query = Query {
                filter: filter.clone(),
                ..base.clone()
            };
            let expected = brute_force(&docs, &query, &admitted, kappa);
            let got: Vec<(u32, f32)> = index
                .first_stage(&query, kappa, &FirstStage::Exact)
                .unwrap()
                .iter()
                .map(|s| (s.id, s.score))
                .collect();
            assert_eq!(got, expected, "{name}, query {qi}: exact first stage");

            let approx = index
                .first_stage(&query, kappa, &FirstStage::Approx(knobs))
                .unwrap();
            assert_eq!(
                approx.len(),
                expected.len(),
                "{name}, query {qi}: approximate count"
            );
            let reference_scores: HashMap<u32, f32> =
                brute_force(&docs, &query, &admitted, usize::MAX)
                    .into_iter()
                    .collect();
            for s in &approx {
                let want = reference_scores.get(&s.id).copied();
                assert!(
                    want.is_some_and(|w| (w - s.score).abs() <= 1e-5 * w.abs().max(1.0)),
                    "{name}, query {qi}: approximate returned doc {} ({}) not admitted or misscored",
                    s.id,
                    s.score
                );
            }

            let params = SearchParams {
                first_stage: FirstStage::Exact,
                k: 10,
                kappa,
                cp_alpha: None,
                ee_beta: None,
                rerank: true,
                prefetch: false,
                explain: false,
                fusion: tandem_engine::Fusion::NONE,
            };
            let out = index.search(&query, &params, &Limits::default()).unwrap();
            assert_eq!(
                out.hits.len(),
                expected.len().min(10),
                "{name}, query {qi}: k hits"
            );
            assert!(
                out.hits.iter().all(|h| admitted(h.doc as usize)),
                "{name}: reranked hits"
            );
        }
    }
}

#[test]
fn filtered_first_stages_equal_brute_force_over_the_admitted_documents() {
    let synth =
        synthetic_index_full(3000, 12, 16, 8, Some(tandem_tests::uncalibrated()), true).unwrap();
    let index = Segment::open(&synth.index).unwrap();
    check_all(&synth, &index, &HashSet::new());

    // Delete a tenth of the documents (and some unknown ids): results must now leave them out
    // too, with every filter, and so must a fresh open of the directory.
    let docs = load_docs(&synth, &index);
    let deleted: HashSet<usize> = pick(docs.len(), 0.1, 9).into_iter().collect();
    let mut ids: Vec<String> = deleted.iter().map(|&d| docs[d].id.clone()).collect();
    ids.push("unknown-1".into());
    let outcome = index.delete(&ids).unwrap();
    assert_eq!(outcome.deleted, deleted.len() as u64);
    assert_eq!(outcome.unknown, vec!["unknown-1".to_string()]);
    assert_eq!(index.live_count(), (docs.len() - deleted.len()) as u64);
    check_all(&synth, &index, &deleted);
    drop(index);
    let reopened = Segment::open(&synth.index).unwrap();
    assert_eq!(reopened.tombstones().len(), deleted.len() as u64);
    check_all(&synth, &reopened, &deleted);
}

#[test]
fn filter_errors_name_the_problem() {
    let synth = synthetic_index_full(200, 1, 8, 3, None, true).unwrap();
    let index = Segment::open(&synth.index).unwrap();
    let query = |text: &str| Query {
        terms: vec![(0, 1.0)],
        vectors: None,
        filter: Filter {
            expr: Some(parse(text).unwrap()),
            ..Filter::default()
        },
    };
    for (text, expected) in [
        ("color = 'x'", "unknown attribute `color`; this index has: lang (string), tags (string), year (integer)"),
        ("year = 'x'", "holds integers"),
        ("lang > 3", "`>` compares integers"),
    ] {
        let err = index
            .first_stage(&query(text), 10, &FirstStage::Exact)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("filter: ") && err.contains(expected), "{text}: {err}");
    }
    let plain = synthetic_index_full(50, 1, 8, 3, None, false).unwrap();
    let index = Segment::open(&plain.index).unwrap();
    let err = index
        .first_stage(&query("lang = 'en'"), 10, &FirstStage::Exact)
        .unwrap_err()
        .to_string();
    assert!(err.contains("this index has no attributes"), "{err}");
}
