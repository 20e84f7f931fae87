//! Deletes and filters over gRPC on loopback: Delete persists before it answers (a restarted
//! server still leaves the documents out), unknown ids are reported, GetIndexInfo counts live
//! and deleted documents, reloads keep the tombstones of the directory they load, concurrent
//! deletes and searches never race, and filters travel in SearchRequest.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tandem_client::queries::{QueryKnobs, QuerySet};
use tandem_client::TandemClient;
use tandem_proto::v1::{FirstStage, IdSet, SearchRequest};
use tandem_server::config::ServeOptions;
use tandem_tests::{synthetic_index, synthetic_index_full, SyntheticIndex, TestServer};
use tonic::Code;

fn queries(synth: &SyntheticIndex) -> QuerySet {
    QuerySet::load(
        &synth.corpus.join("queries.jsonl"),
        Some(&synth.corpus.join("query_vectors.npy")),
        Some(&synth.corpus.join("query_lens.npy")),
    )
    .unwrap()
}

fn request(qs: &QuerySet, i: usize, first_stage: FirstStage) -> SearchRequest {
    qs.request(
        i,
        &QueryKnobs {
            k: Some(10),
            kappa: Some(40),
            first_stage,
            ..QueryKnobs::default()
        },
    )
}

async fn hit_ids(client: &mut TandemClient, request: SearchRequest) -> Vec<String> {
    let reply = client.search(request).await.unwrap();
    reply.hits.into_iter().map(|h| h.doc_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_documents_stay_gone_after_a_restart() {
    let synth = synthetic_index(2000, 6, 16, 31).unwrap();
    let qs = queries(&synth);
    let server = TestServer::start(&synth.index, ServeOptions::default())
        .await
        .unwrap();
    let mut client = TandemClient::connect(&server.url).await.unwrap();
    let mut victims: Vec<String> = Vec::new();
    for i in 0..qs.len() {
        let hits = hit_ids(&mut client, request(&qs, i, FirstStage::Exact)).await;
        victims.extend(hits.into_iter().take(3));
    }
    victims.sort();
    victims.dedup();
    let mut ids = victims.clone();
    ids.push("no-such-doc".into());
    ids.push(victims[0].clone());
    let reply = client.delete(ids).await.unwrap();
    println!(
        "Delete({} ids): deleted {}, already_deleted {}, unknown_ids {:?}, live {}, deleted_count {}",
        victims.len() + 2,
        reply.deleted,
        reply.already_deleted,
        reply.unknown_ids,
        reply.live_count,
        reply.deleted_count
    );
    assert_eq!(reply.deleted, victims.len() as u64);
    assert_eq!(reply.already_deleted, 0);
    assert_eq!(reply.unknown_ids, vec!["no-such-doc".to_string()]);
    assert_eq!(reply.deleted_count, victims.len() as u64);
    assert_eq!(reply.live_count, 2000 - victims.len() as u64);
    let again = client.delete(vec![victims[1].clone()]).await.unwrap();
    assert_eq!((again.deleted, again.already_deleted), (0, 1));

    let gone = |hits: &[String]| hits.iter().all(|h| !victims.contains(h));
    for i in 0..qs.len() {
        for stage in [FirstStage::Exact, FirstStage::Approximate] {
            let hits = hit_ids(&mut client, request(&qs, i, stage)).await;
            assert_eq!(hits.len(), 10);
            assert!(gone(&hits), "query {i} {stage:?}: {hits:?}");
        }
    }
    server.stop().await.unwrap();

    // A new server process on the same directory, allowed to reload any temporary directory.
    let options = ServeOptions {
        index_root: Some(std::env::temp_dir()),
        ..ServeOptions::default()
    };
    let server = TestServer::start(&synth.index, options).await.unwrap();
    let mut client = TandemClient::connect(&server.url).await.unwrap();
    let info = client.index_info().await.unwrap();
    println!(
        "after restart: doc_count {}, live_count {}, deleted_count {}",
        info.doc_count, info.live_count, info.deleted_count
    );
    assert_eq!(info.deleted_count, victims.len() as u64);
    assert_eq!(info.live_count + info.deleted_count, info.doc_count);
    let mut checked = 0;
    for i in 0..qs.len() {
        for stage in [FirstStage::Exact, FirstStage::Approximate] {
            let hits = hit_ids(&mut client, request(&qs, i, stage)).await;
            assert_eq!(hits.len(), 10);
            assert!(gone(&hits), "after restart, query {i} {stage:?}: {hits:?}");
            checked += 1;
        }
    }
    println!(
        "after restart: {checked} searches, none returned any of the {} deleted documents",
        victims.len()
    );

    // Reloading the same directory keeps its tombstones; loading another serves that one's.
    let reply = client.reload_index("").await.unwrap();
    assert_eq!(reply.info.unwrap().deleted_count, victims.len() as u64);
    for i in 0..qs.len() {
        assert!(gone(
            &hit_ids(&mut client, request(&qs, i, FirstStage::Exact)).await
        ));
    }
    let fresh = synthetic_index(2000, 6, 16, 31).unwrap();
    let reply = client
        .reload_index(&fresh.index.display().to_string())
        .await
        .unwrap();
    assert_eq!(reply.info.unwrap().deleted_count, 0);
    let back = hit_ids(&mut client, request(&qs, 0, FirstStage::Exact)).await;
    assert!(!gone(&back), "a fresh directory has no tombstones");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deletes_and_searches_do_not_race() {
    let synth = synthetic_index(3000, 8, 16, 32).unwrap();
    let qs = Arc::new(queries(&synth));
    let server = TestServer::start(&synth.index, ServeOptions::default())
        .await
        .unwrap();
    let mut client = TandemClient::connect(&server.url).await.unwrap();
    // The documents the queries return first: deleting them changes every answer.
    let mut targets: Vec<String> = Vec::new();
    for i in 0..qs.len() {
        let request = qs.request(
            i,
            &QueryKnobs {
                k: Some(40),
                kappa: Some(40),
                first_stage: FirstStage::Exact,
                ..QueryKnobs::default()
            },
        );
        targets.extend(hit_ids(&mut client, request).await);
    }
    targets.sort();
    targets.dedup();
    let acknowledged: Arc<Mutex<HashSet<String>>> = Arc::default();

    let mut deleters = Vec::new();
    for part in 0..2 {
        let mut client = client.clone();
        let acknowledged = acknowledged.clone();
        let mine: Vec<String> = targets.iter().skip(part).step_by(2).cloned().collect();
        deleters.push(tokio::spawn(async move {
            for chunk in mine.chunks(3) {
                let reply = client.delete(chunk.to_vec()).await.unwrap();
                assert!(reply.unknown_ids.is_empty());
                acknowledged.lock().unwrap().extend(chunk.iter().cloned());
            }
        }));
    }
    let mut searchers = Vec::new();
    for s in 0..3 {
        let (mut client, qs, acknowledged) = (client.clone(), qs.clone(), acknowledged.clone());
        searchers.push(tokio::spawn(async move {
            let mut searches = 0;
            for round in 0..40 {
                let i = (round + s) % qs.len();
                let stage = if round % 2 == 0 {
                    FirstStage::Exact
                } else {
                    FirstStage::Approximate
                };
                let before: HashSet<String> = acknowledged.lock().unwrap().clone();
                let hits = hit_ids(&mut client, request(&qs, i, stage)).await;
                for hit in &hits {
                    assert!(
                        !before.contains(hit),
                        "search {round} returned {hit}, deleted before it started"
                    );
                }
                searches += 1;
            }
            searches
        }));
    }
    for deleter in deleters {
        deleter.await.unwrap();
    }
    let mut searches = 0;
    for searcher in searchers {
        searches += searcher.await.unwrap();
    }
    let info = client.index_info().await.unwrap();
    assert_eq!(info.deleted_count, targets.len() as u64);
    println!(
        "{searches} searches ran alongside {} deletes; none returned a document deleted before it",
        targets.len()
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_travel_over_grpc() {
    let synth = synthetic_index_full(1500, 4, 16, 33, None, true).unwrap();
    let qs = queries(&synth);
    let server = TestServer::start(&synth.index, ServeOptions::default())
        .await
        .unwrap();
    let mut client = TandemClient::connect(&server.url).await.unwrap();
    let info = client.index_info().await.unwrap();
    assert_eq!(
        info.attributes.get("year").map(String::as_str),
        Some("integer")
    );
    assert_eq!(
        info.attributes.get("tags").map(String::as_str),
        Some("string")
    );

    let base = request(&qs, 0, FirstStage::Exact);
    let unfiltered = hit_ids(&mut client, base.clone()).await;
    let allowed: Vec<String> = unfiltered.iter().skip(5).cloned().collect();
    let only = SearchRequest {
        include_ids: Some(IdSet {
            ids: allowed.clone(),
        }),
        ..base.clone()
    };
    let hits = hit_ids(&mut client, only).await;
    assert_eq!(hits.len(), allowed.len());
    assert!(hits.iter().all(|h| allowed.contains(h)));
    let empty = SearchRequest {
        include_ids: Some(IdSet { ids: Vec::new() }),
        ..base.clone()
    };
    assert!(hit_ids(&mut client, empty).await.is_empty());
    let without = SearchRequest {
        exclude_ids: Some(IdSet {
            ids: unfiltered[..3].to_vec(),
        }),
        ..base.clone()
    };
    let hits = hit_ids(&mut client, without).await;
    assert_eq!(hits.len(), 10);
    assert!(hits.iter().all(|h| !unfiltered[..3].contains(h)));

    // Document number i has id "d<i>" (zero-padded) in synthetic corpora.
    let by_expr = SearchRequest {
        filter: "year >= 2020 AND tags = 'odd'".into(),
        ..base.clone()
    };
    let hits = hit_ids(&mut client, by_expr).await;
    assert!(!hits.is_empty());
    for hit in &hits {
        let i: usize = hit.trim_start_matches('d').parse().unwrap();
        let attrs = tandem_tests::synthetic_attributes(i).unwrap();
        assert!(
            attrs["year"].as_i64().unwrap() >= 2020 && i % 2 == 1,
            "{hit}: {attrs}"
        );
    }

    for (filter, expected) in [
        ("year >= ", "filter: column 9: expected a value"),
        ("colour = 'red'", "filter: unknown attribute `colour`"),
    ] {
        let bad = SearchRequest {
            filter: filter.into(),
            ..base.clone()
        };
        let status = client.search(bad).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().starts_with(expected),
            "{}",
            status.message()
        );
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_deletes_from_an_id_file_and_filters_searches() {
    use clap::Parser;
    use tandem_client::cli::{run, Cli};
    let synth = synthetic_index_full(800, 3, 16, 34, None, true).unwrap();
    let qs = queries(&synth);
    let server = TestServer::start(&synth.index, ServeOptions::default())
        .await
        .unwrap();
    let mut client = TandemClient::connect(&server.url).await.unwrap();
    let top = hit_ids(&mut client, request(&qs, 0, FirstStage::Exact)).await;
    let work = tempfile::tempdir().unwrap();
    let ids = work.path().join("gone.txt");
    std::fs::write(&ids, format!("{}\r\n\n{}\nnot-there\n", top[0], top[1])).unwrap();
    let addr = server.url.clone();
    let cli = Cli::try_parse_from(["tandem", "delete", "--addr", &addr, "--ids"])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(cli.contains("--ids"), "{cli}");
    let delete = Cli::parse_from([
        "tandem",
        "delete",
        "--addr",
        &addr,
        "--ids",
        ids.to_str().unwrap(),
    ]);
    run(delete).await.unwrap();
    let info = client.index_info().await.unwrap();
    assert_eq!(info.deleted_count, 2);
    let after = hit_ids(&mut client, request(&qs, 0, FirstStage::Exact)).await;
    assert!(!after.contains(&top[0]) && !after.contains(&top[1]));

    // tandem search with an include file and an expression: the run holds only admitted ids.
    let allowed = work.path().join("allowed.txt");
    std::fs::write(&allowed, after[2..].join("\n")).unwrap();
    let out = work.path().join("run.trec");
    let search = |extra: &[&str]| {
        let mut args = vec![
            "tandem".to_string(),
            "search".into(),
            "--addr".into(),
            addr.clone(),
            "--queries".into(),
            synth.corpus.join("queries.jsonl").display().to_string(),
            "--sparse-only".into(),
            "--first-stage".into(),
            "exact".into(),
            "--out".into(),
            out.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Cli::parse_from(args)
    };
    run(search(&["--filter-ids", allowed.to_str().unwrap()]))
        .await
        .unwrap();
    let run_text = std::fs::read_to_string(&out).unwrap();
    // The search was sparse-only, so the same documents in another (sparse) order.
    let mut first_query: Vec<&str> = run_text
        .lines()
        .filter(|l| l.starts_with(&format!("{} ", qs.records[0].id)))
        .map(|l| l.split_whitespace().nth(2).unwrap())
        .collect();
    first_query.sort_unstable();
    let mut expected: Vec<&str> = after[2..].iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(first_query, expected);
    run(search(&["--filter", "tags = 'five'"])).await.unwrap();
    let run_text = std::fs::read_to_string(&out).unwrap();
    assert!(!run_text.is_empty());
    for line in run_text.lines() {
        let doc = line.split_whitespace().nth(2).unwrap();
        let i: usize = doc.trim_start_matches('d').parse().unwrap();
        assert!(i.is_multiple_of(5) && !i.is_multiple_of(7), "{line}");
    }
    let err = run(search(&["--filter", "tags = "]))
        .await
        .unwrap_err()
        .to_string();
    // The server parses the expression and names the column of the fault.
    assert!(
        err.contains("InvalidArgument") && err.contains("column 8"),
        "{err}"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_are_refused_after_the_directory_is_compacted_until_reloaded() {
    let synth = synthetic_index(600, 2, 16, 35).unwrap();
    let server = TestServer::start(&synth.index, ServeOptions::default())
        .await
        .unwrap();
    let mut client = TandemClient::connect(&server.url).await.unwrap();
    let first = client.delete(vec!["d0000001".into()]).await.unwrap();
    assert_eq!((first.deleted, first.unknown_ids.len()), (1, 0));
    let summary = tandem_engine::compact::compact(
        &synth.index,
        &synth.index,
        false,
        &tandem_engine::build::NoProgress,
    )
    .unwrap();
    assert_eq!((summary.kept, summary.dropped), (599, 1));
    // The server still serves the old index; its ids must not be written into the new one.
    let status = client.delete(vec!["d0000002".into()]).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("reload it before deleting"),
        "{status:?}"
    );
    let reply = client.reload_index("").await.unwrap();
    let info = reply.info.unwrap();
    assert_eq!((info.doc_count, info.deleted_count), (599, 0));
    let again = client
        .delete(vec!["d0000002".into(), "d0000001".into()])
        .await
        .unwrap();
    assert_eq!(again.deleted, 1);
    assert_eq!(again.unknown_ids, vec!["d0000001".to_string()]);
    server.stop().await.unwrap();
}
