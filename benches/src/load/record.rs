//! What a load run records: latencies in an HDR histogram, status codes, and the first answer
//! of each query (for quality).

use hdrhistogram::Histogram;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tandem_proto::v1::SearchResponse;

/// Largest latency the histogram holds exactly (larger ones are clamped to it): one hour.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// The outcome of one call.
pub enum Outcome {
    /// Answered: the responses (one per query of the call).
    Answered(Vec<SearchResponse>),
    /// Failed with this status code.
    Failed(tonic::Code),
}

/// Counters of one run (or one worker's share of it; [`Recorder::merge`] adds them up).
pub struct Recorder {
    /// Call latencies, µs.
    pub latency: Histogram<u64>,
    /// Calls by final status code.
    pub codes: BTreeMap<String, u64>,
    /// Queries answered (a batch call answers several).
    pub queries: u64,
    /// Calls made.
    pub calls: u64,
    /// Calls that failed.
    pub errors: u64,
    /// First answer per query id, `(doc id, score)` best first; kept only when `keep_answers`.
    pub answers: HashMap<String, Vec<(String, f64)>>,
    keep_answers: bool,
    /// With [`Recorder::with_timeline`]: each call's `(seconds from the recorder's creation to
    /// its answer, latency in ms)`, in answer order.
    pub timeline: Option<Vec<(f64, f64)>>,
    created: std::time::Instant,
}

impl Recorder {
    /// An empty recorder; `keep_answers` keeps each query's first answer for quality.
    pub fn new(keep_answers: bool) -> Recorder {
        Recorder {
            // Three significant digits from 1 µs to an hour: ~200 KB, any latency at 0.1 %.
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("constant bounds: 1 µs to an hour at 3 significant digits are valid"),
            codes: BTreeMap::new(),
            queries: 0,
            calls: 0,
            errors: 0,
            answers: HashMap::new(),
            keep_answers,
            timeline: None,
            created: std::time::Instant::now(),
        }
    }

    /// This recorder, also keeping every call's answer time and latency.
    pub fn with_timeline(mut self) -> Recorder {
        self.timeline = Some(Vec::new());
        self
    }

    /// Records one call that took `latency` (from its intended start) and ended in `outcome`.
    pub fn record(&mut self, latency: Duration, outcome: Outcome) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency.saturating_record(us.clamp(1, MAX_LATENCY_US));
        if let Some(timeline) = &mut self.timeline {
            timeline.push((self.created.elapsed().as_secs_f64(), us as f64 / 1e3));
        }
        self.calls += 1;
        let code = match outcome {
            Outcome::Answered(responses) => {
                self.queries += responses.len() as u64;
                if self.keep_answers {
                    for response in responses {
                        self.answers.entry(response.query_id).or_insert_with(|| {
                            response
                                .hits
                                .into_iter()
                                .map(|h| (h.doc_id, f64::from(h.score)))
                                .collect()
                        });
                    }
                }
                tonic::Code::Ok
            }
            Outcome::Failed(code) => {
                self.errors += 1;
                code
            }
        };
        *self.codes.entry(format!("{code:?}")).or_default() += 1;
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: Recorder) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        for (code, n) in other.codes {
            *self.codes.entry(code).or_default() += n;
        }
        self.queries += other.queries;
        self.calls += other.calls;
        self.errors += other.errors;
        for (qid, hits) in other.answers {
            self.answers.entry(qid).or_insert(hits);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_proto::v1::Hit;

    fn answer(qid: &str, doc: &str) -> SearchResponse {
        SearchResponse {
            query_id: qid.into(),
            hits: vec![Hit {
                doc_id: doc.into(),
                score: 1.5,
                ..Hit::default()
            }],
            ..SearchResponse::default()
        }
    }

    #[test]
    fn records_and_merges_counts_codes_latencies_and_first_answers() {
        let mut a = Recorder::new(true);
        a.record(
            Duration::from_micros(100),
            Outcome::Answered(vec![answer("q1", "d1")]),
        );
        a.record(
            Duration::from_micros(300),
            Outcome::Failed(tonic::Code::ResourceExhausted),
        );
        let mut b = Recorder::new(true);
        b.record(
            Duration::from_micros(200),
            Outcome::Answered(vec![answer("q1", "d9"), answer("q2", "d2")]),
        );
        a.merge(b);
        assert_eq!((a.calls, a.queries, a.errors), (3, 3, 1));
        assert_eq!(a.codes["Ok"], 2);
        assert_eq!(a.codes["ResourceExhausted"], 1);
        assert_eq!(a.latency.len(), 3);
        assert_eq!(a.latency.max(), 300);
        assert_eq!(a.answers["q1"], vec![("d1".to_string(), 1.5)]);
        assert_eq!(a.answers.len(), 2);
        let mut c = Recorder::new(false);
        c.record(Duration::ZERO, Outcome::Answered(vec![answer("q1", "d1")]));
        assert!(c.answers.is_empty());
        assert_eq!(c.latency.min(), 1, "latencies are clamped to >= 1 µs");
    }
}
