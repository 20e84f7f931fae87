//! Crash recovery of a writable index, end to end: a real `tandem-server` takes a stream of
//! upserts and deletes and is killed with SIGKILL at random moments — between calls, with a
//! call in flight, during refreshes, seals and background merges — and restarted on the same
//! directory, many times.
//!
//! After every restart it proves that:
//! - every acknowledged write is searchable exactly once: an exact search for the `ver` term
//!   (each document's weight for it is its version) returns every live id of the test's model
//!   once, with its latest version as the score, and nothing else; `IndexInfo.live_count`
//!   agrees;
//! - the one write that was in flight when the process died (sent, not answered) is applied
//!   all-or-nothing: every document of the batch (or every id of the delete) is in its before
//!   state, or every one in its after state;
//! - nothing half-written is loaded or kept: segment directories the killed process had not
//!   published, its hidden `.building-PID` staging directories and its `live/` refresh segments
//!   are gone once the new process has opened the index;
//! - the sealed and logged sequence numbers never go back, and the log still holds every
//!   acknowledged write.
//!
//! - temporary files of dead processes (`.segments.json.tmp-PID`, `.tombstones.roaring.tmp-PID`)
//!   are removed at recovery too.
//!
//! At the end the idle server's background merges must bring the sealed segments below the
//! merge factor with the documents unchanged, and SIGTERM must stop it cleanly.
//!
//! The test's choices come from a fixed-seed PRNG; the kill moments also depend on timing.
//! 200 kill points locally, 30 with `CI=true`. It prints a one-line summary of what it
//! exercised.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tandem_engine::approx::{ApproxBuildParams, ApproxQueryParams};
use tandem_engine::format::segments::{self, SealStage, SegmentList};
use tandem_engine::live::create::{create, CreateConfig};
use tandem_proto::v1::admin_client::AdminClient;
use tandem_proto::v1::search_client::SearchClient;
use tandem_proto::v1::{
    DeleteRequest, DeleteResponse, Document, FirstStage, GetIndexInfoRequest, IndexInfo, Query,
    Rerank, SearchRequest, TokenVectors, UpsertRequest, UpsertResponse,
};
use tonic::transport::Channel;

const DIM: usize = 8;
/// Ids are `d0` … `d299`.
const POOL: u64 = 300;
const SEED: u64 = 0x7a4d_3e11_c0ff_ee42;
/// A file the test writes into each directory the killed server left unpublished; it must be
/// gone once the next server has opened the index.
const MARK: &str = "left-by-the-killed-server";
/// Lines of the server log shown when a check fails.
const LOG_TAIL: usize = 40;

/// xorshift64*: deterministic choices without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// One write call.
#[derive(Clone, Debug)]
enum Op {
    /// Documents as (id, version), and the request carrying them.
    Upsert {
        docs: Vec<(String, u32)>,
        request: UpsertRequest,
    },
    Delete(Vec<String>),
}

impl Op {
    /// Every id the write touches, with its state before (in `model`) and after.
    fn effects(&self, model: &Model) -> Vec<(String, Option<u32>, Option<u32>)> {
        match self {
            Op::Upsert { docs, .. } => docs
                .iter()
                .map(|(id, version)| (id.clone(), model.live.get(id).copied(), Some(*version)))
                .collect(),
            Op::Delete(ids) => ids
                .iter()
                .map(|id| (id.clone(), model.live.get(id).copied(), None))
                .collect(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Op::Upsert { docs, .. } => format!("upsert of {docs:?}"),
            Op::Delete(ids) => format!("delete of {ids:?}"),
        }
    }
}

/// What the index must hold: the live ids and their versions.
#[derive(Default)]
struct Model {
    live: HashMap<String, u32>,
    /// The highest version ever sent per id (versions only grow, also across deletes).
    sent: HashMap<String, u32>,
}

impl Model {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Upsert { docs, .. } => {
                for (id, version) in docs {
                    self.live.insert(id.clone(), *version);
                }
            }
            Op::Delete(ids) => {
                for id in ids {
                    self.live.remove(id);
                }
            }
        }
    }

    /// The next write: mostly an upsert of 1–20 ids of the pool (new ones and replacements),
    /// sometimes a delete of 1–5 live ids.
    fn next_op(&mut self, rng: &mut Rng) -> Op {
        if !self.live.is_empty() && rng.below(8) == 0 {
            let mut live: Vec<&String> = self.live.keys().collect();
            live.sort();
            let count = rng.between(1, 5.min(live.len() as u64));
            let mut ids = Vec::new();
            while ids.len() < count as usize {
                let id = live[rng.below(live.len() as u64) as usize].clone();
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            return Op::Delete(ids);
        }
        let count = rng.between(1, 20);
        let mut docs: Vec<(String, u32)> = Vec::new();
        while docs.len() < count as usize {
            let id = format!("d{}", rng.below(POOL));
            if docs.iter().any(|(d, _)| *d == id) {
                continue;
            }
            let version = self.sent.get(&id).copied().unwrap_or(0) + 1;
            self.sent.insert(id.clone(), version);
            docs.push((id, version));
        }
        let request = UpsertRequest {
            documents: docs
                .iter()
                .map(|(id, version)| document(rng, id, *version))
                .collect(),
            wait_for_visible: rng.below(5) == 0,
        };
        Op::Upsert { docs, request }
    }
}

/// A document whose `ver` weight is its version, `all` weight 1, with a few random terms and
/// 1–4 random token vectors.
fn document(rng: &mut Rng, id: &str, version: u32) -> Document {
    let mut sparse_tokens = HashMap::from([
        ("all".to_string(), 1.0),
        ("ver".to_string(), version as f32),
    ]);
    for _ in 0..rng.below(4) {
        let weight = 0.1 + rng.unit().abs() * 2.0;
        sparse_tokens.insert(format!("t{}", rng.below(40)), weight);
    }
    let rows = rng.between(1, 4) as usize;
    Document {
        id: id.to_string(),
        sparse_tokens,
        vectors: Some(TokenVectors {
            dim: DIM as u32,
            values: (0..rows * DIM).map(|_| rng.unit()).collect(),
            ..TokenVectors::default()
        }),
        ..Document::default()
    }
}

/// A running server and its log.
struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
    url: String,
}

impl Server {
    /// Starts the server on `index` and waits until it says where it listens.
    fn start(index: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tandem-server"))
            .arg("--index")
            .arg(index)
            .args(["--listen", "127.0.0.1:0"])
            .args(["--refresh-interval", "0.05", "--seal-docs", "40"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tandem-server");
        let (tx, lines) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Server {
            child,
            lines,
            log: Vec::new(),
            url: String::new(),
        };
        let needle = "tandem.v1.Search, tandem.v1.Admin, grpc.health.v1 and reflection listening";
        loop {
            match server.lines.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    let found = line.contains(needle).then(|| listen_addr(&line));
                    server.log.push(line);
                    if let Some(addr) = found {
                        server.url = format!("http://{addr}");
                        return server;
                    }
                }
                Err(e) => panic!(
                    "the server did not start listening ({e}); its log:\n{}",
                    server.log.join("\n")
                ),
            }
        }
    }

    /// The log lines so far (the newest `LOG_TAIL`), for failure messages.
    fn tail(&mut self) -> String {
        self.log.extend(self.lines.try_iter());
        let from = self.log.len().saturating_sub(LOG_TAIL);
        self.log[from..].join("\n")
    }

    /// SIGKILL. The process is reaped by [`Server::reap`].
    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the server");
    }

    /// Waits for the killed process and for the end of its log; returns the whole log.
    fn reap(mut self) -> Vec<String> {
        self.child.wait().expect("wait for the killed server");
        loop {
            match self.lines.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => self.log.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => return self.log,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("the killed server's log never ended")
                }
            }
        }
    }

    /// SIGTERM, and a clean exit within 30 s.
    fn stop(mut self) {
        let signalled = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(signalled.success());
        for _ in 0..600 {
            if let Some(status) = self.child.try_wait().expect("poll the server") {
                assert!(
                    status.success(),
                    "exit status {status:?} after SIGTERM; log:\n{}",
                    self.tail()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("the server did not exit within 30 s of SIGTERM");
    }
}

fn listen_addr(line: &str) -> String {
    let start = line.find("addr=").expect("addr in the log line") + 5;
    line[start..]
        .split_whitespace()
        .next()
        .expect("an address after addr=")
        .to_string()
}

/// Clients of a server that has just said it listens (retried briefly).
async fn connect(url: &str) -> (SearchClient<Channel>, AdminClient<Channel>) {
    let mut last = None;
    for _ in 0..100 {
        match Channel::from_shared(url.to_string())
            .expect("a valid url")
            .connect()
            .await
        {
            Ok(channel) => {
                return (
                    SearchClient::new(channel.clone()),
                    AdminClient::new(channel),
                )
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("cannot connect to {url}: {last:?}");
}

/// What a restarted server serves.
struct Observed {
    /// Id → score of the exact search for `ver` (the version of the copy found).
    versions: HashMap<String, f32>,
    info: IndexInfo,
}

/// Every live document, by id, with its score for `term` (exact first stage, no rerank); an
/// id returned twice fails the test.
async fn search_all(
    search: &mut SearchClient<Channel>,
    term: &str,
    iteration: usize,
) -> HashMap<String, f32> {
    let request = SearchRequest {
        query: Some(Query {
            sparse_tokens: HashMap::from([(term.to_string(), 1.0)]),
            ..Query::default()
        }),
        k: Some(1000),
        kappa: Some(1000),
        rerank: Rerank::None as i32,
        first_stage: FirstStage::Exact as i32,
        ..SearchRequest::default()
    };
    let hits = search
        .search(request)
        .await
        .unwrap_or_else(|e| panic!("iteration {iteration}: search for {term:?} failed: {e:?}"))
        .into_inner()
        .hits;
    assert!(
        hits.len() < 1000,
        "iteration {iteration}: {} hits, more than the pool",
        hits.len()
    );
    let mut found = HashMap::new();
    for hit in hits {
        if let Some(first) = found.insert(hit.doc_id.clone(), hit.sparse_score) {
            panic!(
                "iteration {iteration}: document {} returned twice by the search for {term:?} \
                 (scores {first} and {})",
                hit.doc_id, hit.sparse_score
            );
        }
    }
    found
}

async fn observe(search: &mut SearchClient<Channel>, iteration: usize) -> Observed {
    let versions = search_all(search, "ver", iteration).await;
    let all = search_all(search, "all", iteration).await;
    let ids: BTreeSet<&String> = versions.keys().collect();
    assert_eq!(
        ids,
        all.keys().collect::<BTreeSet<_>>(),
        "iteration {iteration}: the searches for `ver` and `all` return different documents"
    );
    for (id, score) in &all {
        assert_eq!(
            *score, 1.0,
            "iteration {iteration}: document {id} scores {score} for `all`, expected 1"
        );
    }
    let info = search
        .get_index_info(GetIndexInfoRequest::default())
        .await
        .unwrap_or_else(|e| panic!("iteration {iteration}: GetIndexInfo failed: {e:?}"))
        .into_inner();
    Observed { versions, info }
}

fn state(version: Option<u32>) -> String {
    version.map_or("absent".to_string(), |v| format!("version {v}"))
}

fn found(score: Option<f32>) -> String {
    score.map_or("absent".to_string(), |s| format!("score {s}"))
}

/// Checks what the restarted server serves against the model; the ids of `uncertain` (the
/// write in flight at the kill) may be in their before or after state, all of them alike.
/// Folds `uncertain` into the model as observed; returns whether it was applied.
fn reconcile(
    iteration: usize,
    model: &mut Model,
    uncertain: Option<&Op>,
    served: &HashMap<String, f32>,
    log: &str,
) -> Option<bool> {
    let effects = uncertain.map(|op| op.effects(model)).unwrap_or_default();
    let touched: HashSet<&str> = effects.iter().map(|(id, _, _)| id.as_str()).collect();
    let ids: BTreeSet<&str> = model
        .live
        .keys()
        .chain(served.keys())
        .map(String::as_str)
        .collect();
    for id in ids.into_iter().filter(|id| !touched.contains(id)) {
        let expected = model.live.get(id).copied();
        let got = served.get(id).copied();
        assert!(
            got == expected.map(|v| v as f32),
            "iteration {iteration}: document {id}: expected {}, found {} (the write in flight: \
             {}); server log:\n{log}",
            state(expected),
            found(got),
            uncertain.map_or("none".to_string(), Op::describe),
        );
    }
    let op = uncertain?;
    let mut applied = Vec::new();
    for (id, before, after) in &effects {
        let got = served.get(id).copied();
        if got == after.map(|v| v as f32) {
            applied.push((id, true));
        } else if got == before.map(|v| v as f32) {
            applied.push((id, false));
        } else {
            panic!(
                "iteration {iteration}: document {id} of the write in flight ({}): expected {} \
                 (not applied) or {} (applied), found {}; server log:\n{log}",
                op.describe(),
                state(*before),
                state(*after),
                found(got),
            );
        }
    }
    let first = applied[0].1;
    assert!(
        applied.iter().all(|(_, a)| *a == first),
        "iteration {iteration}: the write in flight ({}) is half applied: {applied:?} \
         (id, applied); server log:\n{log}",
        op.describe(),
    );
    if first {
        model.apply(op);
    }
    Some(first)
}

/// What the writers saw.
#[derive(Default)]
struct Tally {
    calls: u64,
    /// The highest sequence number an Upsert answer gave.
    acked_seq: u64,
    /// Delete answers whose counts disagree with the model (every id was live).
    delete_miscounts: Vec<String>,
}

enum Answer {
    Upsert(UpsertResponse),
    Delete(DeleteResponse),
}

async fn send(mut admin: AdminClient<Channel>, op: Op) -> Result<Answer, tonic::Status> {
    match op {
        Op::Upsert { request, .. } => Ok(Answer::Upsert(admin.upsert(request).await?.into_inner())),
        Op::Delete(ids) => Ok(Answer::Delete(
            admin.delete(DeleteRequest { ids }).await?.into_inner(),
        )),
    }
}

/// Checks an answer to `op` and records it.
fn acknowledged(iteration: usize, op: &Op, answer: Answer, tally: &mut Tally) {
    tally.calls += 1;
    match (op, answer) {
        (Op::Upsert { docs, .. }, Answer::Upsert(r)) => {
            assert_eq!(
                (r.acknowledged, r.batches),
                (docs.len() as u64, 1),
                "iteration {iteration}: upsert answer {r:?} for {} documents",
                docs.len()
            );
            assert!(
                r.seq > tally.acked_seq,
                "iteration {iteration}: upsert answered seq {} after seq {}",
                r.seq,
                tally.acked_seq
            );
            tally.acked_seq = r.seq;
        }
        (Op::Delete(ids), Answer::Delete(r)) => {
            if r.deleted != ids.len() as u64 {
                tally.delete_miscounts.push(format!(
                    "iteration {iteration}: delete of live {ids:?} answered deleted={} \
                     already_deleted={} unknown_ids={:?}",
                    r.deleted, r.already_deleted, r.unknown_ids
                ));
            }
        }
        _ => unreachable!("an answer of the other kind"),
    }
}

/// Writes (one call at a time, applying each acknowledged one to the model) until `deadline`,
/// then kills the server at once; returns the write in flight then, if any.
async fn write_until_killed(
    iteration: usize,
    server: &mut Server,
    admin: &AdminClient<Channel>,
    rng: &mut Rng,
    model: &mut Model,
    tally: &mut Tally,
    deadline: Instant,
) -> Option<Op> {
    let deadline = tokio::time::sleep_until(deadline.into());
    tokio::pin!(deadline);
    loop {
        if deadline.is_elapsed() {
            server.kill();
            return None;
        }
        if rng.below(8) == 0 {
            // Idle a moment, so some kills land between calls.
            let idle = tokio::time::sleep(Duration::from_micros(rng.below(5_000)));
            tokio::select! {
                biased;
                () = idle => {}
                () = &mut deadline => {}
            }
            continue;
        }
        let op = model.next_op(rng);
        let call = send(admin.clone(), op.clone());
        tokio::pin!(call);
        tokio::select! {
            biased;
            answer = &mut call => {
                let answer = answer.unwrap_or_else(|e| {
                    panic!("iteration {iteration}: {} failed: {e:?}; server log:\n{}",
                        op.describe(), server.tail())
                });
                acknowledged(iteration, &op, answer, tally);
                model.apply(&op);
            }
            () = &mut deadline => {
                // Killed before the call is dropped: the server may be anywhere in it.
                server.kill();
                return Some(op);
            }
        }
    }
}

/// Marks what the killed server left that no server may load: segment directories the list
/// does not name, hidden staging directories, the refresh segments. Returns the marked ones.
fn mark_leftovers(index: &Path) -> Vec<PathBuf> {
    let list = SegmentList::read(&index.join(segments::FILE)).expect("read segments.json");
    let listed: HashSet<&str> = list.segments.iter().map(|e| e.name.as_str()).collect();
    let mut marked = Vec::new();
    for entry in std::fs::read_dir(index).expect("list the index directory") {
        let entry = entry.expect("a directory entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        let unpublished = (name.starts_with("seg-") && !listed.contains(name.as_str()))
            || name.contains(".building-")
            || name == "live";
        if unpublished && entry.path().is_dir() {
            std::fs::write(entry.path().join(MARK), b"").expect("write a mark");
            marked.push(entry.path());
        }
    }
    marked
}

/// Temporary files of dead processes in the index directory and its subdirectories (e.g. a
/// segment list or tombstone file being written when the process died): nothing loads them,
/// and recovery does not remove them.
fn stale_temp_files(index: &Path, live_pid: u32) -> Vec<String> {
    let mut dirs = vec![index.to_path_buf()];
    let mut stale = Vec::new();
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue; // removed meanwhile by a merge
        };
        for entry in entries.map_while(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.contains(".tmp-") && !name.ends_with(&format!(".tmp-{live_pid}")) {
                let relative = path.strip_prefix(index).unwrap_or(&path);
                stale.push(relative.display().to_string());
            }
        }
    }
    stale
}

/// Sealed segments (not the refresh segments in `live/`), as "name:docs/deleted".
fn sealed_segments(info: &IndexInfo) -> Vec<String> {
    info.segments
        .iter()
        .filter(|s| !s.name.starts_with("live/"))
        .map(|s| format!("{}:{}/{}", s.name, s.doc_count, s.deleted_count))
        .collect()
}

/// Waits (up to 60 s) until the idle server's background merges have brought the sealed
/// segments below the merge factor (8: every segment is in the smallest tier); returns them.
async fn wait_for_merges(search: &mut SearchClient<Channel>) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let info = search
            .get_index_info(GetIndexInfoRequest::default())
            .await
            .expect("GetIndexInfo")
            .into_inner();
        let sealed = sealed_segments(&info);
        if sealed.len() < 8 || Instant::now() > deadline {
            return sealed;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the run exercised, for the summary line.
#[derive(Default)]
struct Summary {
    kills: usize,
    in_flight: usize,
    in_flight_applied: usize,
    sealed_seq_advances: usize,
    seals_logged: usize,
    merges_logged: usize,
    leftover_dirs: usize,
}

fn count_lines(log: &[String], needle: &str) -> usize {
    log.iter().filter(|line| line.contains(needle)).count()
}

/// The restart checks beyond the documents: counts, sequence numbers, checksums, leftovers.
fn check_info(
    iteration: usize,
    observed: &Observed,
    tally: &Tally,
    sealed_before: u64,
    marked: &[PathBuf],
    log: &str,
) {
    let info = &observed.info;
    let writes = info.writes.clone().expect("IndexInfo.writes");
    assert!(
        writes.writable,
        "iteration {iteration}: not writable: {}",
        writes.reason
    );
    assert_eq!(
        info.live_count,
        observed.versions.len() as u64,
        "iteration {iteration}: IndexInfo.live_count against the documents the search returns; \
         server log:\n{log}"
    );
    assert!(
        !info.checksums.starts_with("corrupt"),
        "iteration {iteration}: {}",
        info.checksums
    );
    assert!(
        writes.sealed_seq >= sealed_before,
        "iteration {iteration}: sealed_seq went back from {sealed_before} to {}",
        writes.sealed_seq
    );
    assert!(
        writes.logged_seq >= tally.acked_seq && writes.visible_seq == writes.logged_seq,
        "iteration {iteration}: after recovery logged_seq {} visible_seq {}, but seq {} was \
         acknowledged",
        writes.logged_seq,
        writes.visible_seq,
        tally.acked_seq
    );
    for dir in marked {
        assert!(
            !dir.join(MARK).exists(),
            "iteration {iteration}: {} (not published by the killed server) is still there \
             after recovery; server log:\n{log}",
            dir.display()
        );
    }
}

#[test]
fn acknowledged_writes_survive_sigkill_exactly_once() {
    let started = Instant::now();
    let iterations = if std::env::var("CI").as_deref() == Ok("true") {
        30
    } else {
        200
    };
    let dir = tempfile::tempdir().expect("a temp dir");
    let index = dir.path().join("index");
    let config = CreateConfig {
        dim: DIM,
        codec: tandem_engine::tokens::Codec::F16,
        vocab: None,
        first_stage: Some(SealStage {
            build: ApproxBuildParams::default(),
            query_defaults: ApproxQueryParams::default(),
        }),
    };
    create(&config, &index, false).expect("create the empty index");
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let mut rng = Rng(SEED);
    let mut model = Model::default();
    let mut tally = Tally::default();
    let mut summary = Summary::default();
    let mut uncertain: Option<Op> = None;
    let mut marked: Vec<PathBuf> = Vec::new();
    let mut sealed_seq = 0;

    for iteration in 0..=iterations {
        let mut server = Server::start(&index);
        let (mut search, admin) = runtime.block_on(connect(&server.url));
        let observed = runtime.block_on(observe(&mut search, iteration));
        let log = server.tail();
        if let Some(applied) = reconcile(
            iteration,
            &mut model,
            uncertain.as_ref(),
            &observed.versions,
            &log,
        ) {
            summary.in_flight_applied += usize::from(applied);
        }
        check_info(iteration, &observed, &tally, sealed_seq, &marked, &log);
        let now_sealed = observed.info.writes.as_ref().map_or(0, |w| w.sealed_seq);
        summary.sealed_seq_advances += usize::from(now_sealed > sealed_seq);
        sealed_seq = now_sealed;
        let stale = stale_temp_files(&index, server.child.id());
        assert!(
            stale.is_empty(),
            "iteration {iteration}: temporary files of dead processes left after recovery: \
             {stale:?}"
        );
        if iteration == iterations {
            let at_restart = sealed_segments(&observed.info);
            let merged = runtime.block_on(wait_for_merges(&mut search));
            eprintln!(
                "kill points: {} (in-flight: {}, of them applied: {}), sealed_seq advanced {} \
                 times, seals logged {}, merges logged {}, final segments {} (after idle \
                 merging {}), live docs {}, unpublished dirs removed at recovery {}, delete \
                 answers miscounted {}, {:.1} s",
                summary.kills,
                summary.in_flight,
                summary.in_flight_applied,
                summary.sealed_seq_advances,
                summary.seals_logged,
                summary.merges_logged,
                at_restart.len(),
                merged.len(),
                model.live.len(),
                summary.leftover_dirs,
                tally.delete_miscounts.len(),
                started.elapsed().as_secs_f64(),
            );
            eprintln!("  sealed segments at the last restart (name:docs/deleted): {at_restart:?}");
            eprintln!("  after idle merging: {merged:?}");
            assert!(
                tally.delete_miscounts.is_empty(),
                "Delete answers that miscounted their ids: {:?}",
                tally.delete_miscounts
            );
            assert!(
                merged.len() < 8,
                "the idle server's merges left {} sealed segments: {merged:?}; log:\n{}",
                merged.len(),
                server.tail()
            );
            let after = runtime.block_on(observe(&mut search, iteration));
            let log = server.tail();
            reconcile(iteration, &mut model, None, &after.versions, &log);
            check_info(iteration, &after, &tally, sealed_seq, &[], &log);
            server.stop();
            break;
        }

        let deadline = Instant::now() + Duration::from_millis(rng.between(5, 250));
        uncertain = runtime.block_on(write_until_killed(
            iteration,
            &mut server,
            &admin,
            &mut rng,
            &mut model,
            &mut tally,
            deadline,
        ));
        let log = server.reap();
        summary.kills += 1;
        summary.in_flight += usize::from(uncertain.is_some());
        summary.seals_logged += count_lines(&log, "refresh segments sealed");
        summary.merges_logged += count_lines(&log, "segments merged");
        marked = mark_leftovers(&index);
        summary.leftover_dirs += marked
            .iter()
            .filter(|d| !d.ends_with(tandem_engine::live::LIVE_DIR))
            .count();
    }
}
