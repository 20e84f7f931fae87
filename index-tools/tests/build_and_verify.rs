//! `tandem-index` as a user runs it: bad inputs are reported with file and line (or row) and
//! leave no index behind; corrupt indexes fail `verify` (non-zero exit) and refuse to load.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tandem_data::npy::{write_f32, write_i8, write_u32};
use tandem_engine::{Segment, Verify};

const DIM: usize = 4;

/// A small valid corpus: 3 documents with 2, 1 and 3 tokens.
struct Inputs {
    dir: tempfile::TempDir,
}

impl Inputs {
    fn new() -> Inputs {
        let dir = tempfile::tempdir().unwrap();
        let inputs = Inputs { dir };
        inputs.docs(concat!(
            "{\"id\": \"a\", \"vector\": {\"apple\": 1.0, \"pie\": 0.5}}\n",
            "{\"id\": 7, \"vector\": {\"pie\": 2.0}}\n",
            "\n",
            "{\"id\": \"c\", \"text\": \"ignored\", \"vector\": {\"cake\": 0.25, \"apple\": 0.75}}\n",
        ));
        write_u32(&inputs.path("lens.npy"), &[3], &[2, 1, 3]).unwrap();
        inputs.vectors(&[0.5; 6 * DIM]);
        inputs
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn docs(&self, text: &str) {
        std::fs::write(self.path("docs.jsonl"), text).unwrap();
    }

    fn vectors(&self, values: &[f32]) {
        write_f32(
            &self.path("vectors.npy"),
            &[(values.len() / DIM) as u64, DIM as u64],
            values,
        )
        .unwrap();
    }

    fn out(&self) -> PathBuf {
        self.path("index")
    }

    fn build(&self, extra: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tandem-index"));
        command
            .arg("build")
            .arg("--docs")
            .arg(self.path("docs.jsonl"))
            .arg("--vectors")
            .arg(self.path("vectors.npy"))
            .arg("--lens")
            .arg(self.path("lens.npy"))
            .arg("--out")
            .arg(self.out())
            .args(extra);
        command.output().unwrap()
    }

    /// Builds, expects failure with every needle in stderr, and checks nothing was left behind.
    fn expect_failure(&self, extra: &[&str], needles: &[&str]) {
        let output = self.build(extra);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "build succeeded; stderr: {stderr}"
        );
        for needle in needles {
            assert!(stderr.contains(needle), "{needle:?} not in {stderr:?}");
        }
        assert!(
            !self.out().exists(),
            "a failed build left {}",
            self.out().display()
        );
        let leftovers: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("building"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "staging directories left: {leftovers:?}"
        );
    }
}

fn tandem_index(args: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tandem-index"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_valid_build_verifies_and_loads() {
    let inputs = Inputs::new();
    let output = inputs.build(&[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let index = Segment::open(&inputs.out()).unwrap();
    assert_eq!(
        (index.doc_count(), index.vocab_size(), index.dim()),
        (3, 3, DIM)
    );
    assert_eq!(index.external_id(1), Some("7"));
    let doc = index.tokens().doc(2).unwrap();
    let tandem_engine::tokens::DocData::F16(packed) = doc.data else {
        panic!("the default codec is f16");
    };
    assert_eq!((doc.tokens, packed.len()), (3, 16 * DIM));
    let verify = tandem_index(&[Path::new("verify"), &inputs.out()]);
    assert!(verify.status.success());
    assert!(String::from_utf8_lossy(&verify.stdout).contains("checksums and invariants verified"));
    let inspect = tandem_index(&[Path::new("inspect"), &inputs.out()]);
    assert!(String::from_utf8_lossy(&inspect.stdout).contains("\"format_version\": 1"));

    // Building onto an existing index needs --force.
    let again = inputs.build(&[]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert!(inputs.build(&["--force"]).status.success());
}

#[test]
fn bad_documents_name_file_line_and_field() {
    let inputs = Inputs::new();
    let good_line = "{\"id\": \"x\", \"vector\": {\"t\": 1.0}}\n";
    let cases: &[(String, &[&str])] = &[
        (
            format!("{good_line}{{\"id\": \"y\", \"vector\": {{\"t\": 1.0}}\n{good_line}"),
            &["docs.jsonl:2", "invalid record"],
        ),
        (
            format!("{good_line}{{\"id\": \"y\", \"vector\": {{\"t\": -2}}}}\n{good_line}"),
            &["docs.jsonl:2", "\"t\"", ">= 0"],
        ),
        (
            format!("{good_line}{good_line}{good_line}"),
            &["docs.jsonl:2", "already on line 1"],
        ),
        (
            format!("{good_line}{{\"vector\": {{}}}}\n{good_line}"),
            &["docs.jsonl:2", "`id` is missing"],
        ),
        (
            format!(
                "{good_line}{{\"id\": \"q\", \"vector\": {{\"a\": 1, \"a\": 2}}}}\n{good_line}"
            ),
            &["docs.jsonl:2", "appears twice"],
        ),
    ];
    for (text, needles) in cases {
        inputs.docs(text);
        inputs.expect_failure(&[], needles);
    }
}

#[test]
fn bad_vectors_and_counts_name_the_row() {
    let inputs = Inputs::new();
    let mut values = vec![0.5; 6 * DIM];
    values[4 * DIM + 2] = f32::NAN;
    inputs.vectors(&values);
    inputs.expect_failure(
        &[],
        &[
            "vectors.npy: row 4",
            "(document \"c\", its token 1)",
            "column 2",
        ],
    );
    values[4 * DIM + 2] = 1e6;
    inputs.vectors(&values);
    inputs.expect_failure(&[], &["row 4", "float16 range"]);

    let inputs = Inputs::new();
    write_u32(&inputs.path("lens.npy"), &[3], &[2, 1, 2]).unwrap();
    inputs.expect_failure(&[], &["lens.npy", "sum to 5", "6 rows"]);
    write_u32(&inputs.path("lens.npy"), &[2], &[3, 3]).unwrap();
    inputs.expect_failure(&[], &["2 token counts for 3 documents"]);
    write_u32(&inputs.path("lens.npy"), &[3], &[3, 0, 3]).unwrap();
    inputs.expect_failure(&[], &["lens.npy: row 1", "0 token vectors"]);

    let inputs = Inputs::new();
    write_f32(
        &inputs.path("vectors.npy"),
        &[6 * DIM as u64],
        &[0.5; 6 * DIM],
    )
    .unwrap();
    inputs.expect_failure(&[], &["vectors.npy", "2-D"]);
    write_i8(&inputs.path("vectors.npy"), &[6, DIM as u64], &[3; 6 * DIM]).unwrap();
    inputs.expect_failure(&[], &["--int8-scale"]);
    assert!(inputs.build(&["--int8-scale", "1/127"]).status.success());

    let inputs = Inputs::new();
    inputs.expect_failure(&["--int8-scale", "0.5"], &["only for int8"]);
    inputs.expect_failure(&["--int8-scale", "-1"], &["finite number > 0"]);
}

#[test]
fn vocabulary_files_and_numeric_token_ids() {
    let inputs = Inputs::new();
    std::fs::write(inputs.path("vocab.txt"), "[PAD]\napple\npie\ncake\n").unwrap();
    let vocab = inputs.path("vocab.txt");
    let vocab = vocab.to_str().unwrap();
    assert!(inputs.build(&["--vocab", vocab]).status.success());
    assert_eq!(
        Segment::open(&inputs.out()).unwrap().term_id("cake"),
        Some(3)
    );

    let inputs2 = Inputs::new();
    std::fs::write(inputs2.path("vocab.txt"), "[PAD]\napple\npie\n").unwrap();
    let vocab2 = inputs2.path("vocab.txt");
    inputs2.expect_failure(
        &["--vocab", vocab2.to_str().unwrap()],
        &["docs.jsonl:4", "\"cake\"", "not in the vocabulary"],
    );

    inputs2.docs("{\"id\": 1, \"vector\": {\"1\": 0.5, \"2\": 1.5}}\n{\"id\": 2, \"vector\": {\"2\": 1}}\n{\"id\": 3, \"vector\": {\"9\": 1}}\n");
    inputs2.expect_failure(
        &["--vocab", vocab2.to_str().unwrap(), "--token-ids"],
        &["docs.jsonl:3", "\"9\"", "below the vocabulary size 3"],
    );
}

#[test]
fn corrupt_indexes_fail_verify_and_refuse_to_load() {
    let inputs = Inputs::new();
    assert!(inputs.build(&[]).status.success());
    let out = inputs.out();

    // One flipped byte in the token vectors: same size, wrong checksum.
    let tokens = out.join("tokens.packed");
    let mut bytes = std::fs::read(&tokens).unwrap();
    bytes[70] ^= 0x40;
    std::fs::write(&tokens, &bytes).unwrap();
    let verify = tandem_index(&[Path::new("verify"), &out]);
    assert!(!verify.status.success());
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(
        stderr.contains("tokens.packed") && stderr.contains("checksum mismatch"),
        "{stderr}"
    );
    let err = Segment::open(&out).err().unwrap().to_string();
    assert!(err.contains("checksum mismatch"), "{err}");
    bytes[70] ^= 0x40;
    std::fs::write(&tokens, &bytes).unwrap();
    assert!(Segment::open(&out).is_ok());

    // A truncated file fails even without checksums.
    let docs = out.join("postings.docs");
    let original = std::fs::read(&docs).unwrap();
    std::fs::write(&docs, &original[..original.len() - 4]).unwrap();
    let err = Segment::open_with(&out, Verify::SkipChecksums)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("postings.docs"), "{err}");
    std::fs::write(&docs, &original).unwrap();

    // A manifest of another format version is refused with a message.
    let manifest_path = out.join("manifest.json");
    let manifest = std::fs::read_to_string(&manifest_path).unwrap();
    std::fs::write(
        &manifest_path,
        manifest.replace("\"format_version\": 1", "\"format_version\": 99"),
    )
    .unwrap();
    let err = Segment::open(&out).err().unwrap().to_string();
    assert!(err.contains("format version 99"), "{err}");

    // A directory without a manifest (an interrupted build) is not an index.
    std::fs::remove_file(&manifest_path).unwrap();
    let err = Segment::open(&out).err().unwrap().to_string();
    assert!(err.contains("no manifest.json"), "{err}");
    assert!(!tandem_index(&[Path::new("verify"), &out]).status.success());
}

#[test]
fn the_pq_codec_builds_verifies_and_refuses_a_mismatched_codebook() {
    let inputs = Inputs::new();
    // Eighths: exact in f16, so the f16 values are these.
    let values: Vec<f32> = (0..6 * DIM)
        .map(|i| ((i * 5 % 17) as f32 - 8.0) / 8.0)
        .collect();
    inputs.vectors(&values);
    let output = inputs.build(&["--codec", "pq"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out = inputs.out();
    let index = Segment::open(&out).unwrap();
    assert_eq!(index.manifest().vector_codec, "pq");
    // dim 4: 4 one-value subspaces, so 4 code bytes and a 2-byte scale per token. 6 tokens
    // have at most 6 values per subspace, each its own centroid: decoding reproduces the
    // values up to the 8-bit rounding of the centroids (half a step of 1/127 each).
    assert_eq!(index.tokens().vector_bytes(), 6 * (DIM + 2));
    let doc = index.tokens().doc(2).unwrap();
    let tandem_engine::tokens::DocData::Pq(pq) = doc.data else {
        panic!("built with --codec pq");
    };
    assert_eq!(
        (doc.tokens, pq.codes.len(), pq.scales.len()),
        (3, 3 * DIM, 3)
    );
    let query = [1.0, -0.5, 0.25, 2.0];
    let kind = tandem_engine::kernels::detect();
    let expected = values[3 * DIM..]
        .chunks_exact(DIM)
        .map(|row| row.iter().zip(&query).map(|(v, q)| v * q).sum::<f32>())
        .fold(f32::NEG_INFINITY, f32::max);
    let got = doc.maxsim(kind, &query, 1, DIM);
    assert!((got - expected).abs() < 0.02, "{got} vs {expected}");

    let verify = tandem_index(&[Path::new("verify"), &out]);
    assert!(verify.status.success());
    let stdout = String::from_utf8_lossy(&verify.stdout).to_string();
    assert!(stdout.contains("pq.codebook") && stdout.contains("pq.codes"));
    let inspect = tandem_index(&[Path::new("inspect"), &out]);
    let stdout = String::from_utf8_lossy(&inspect.stdout).to_string();
    assert!(stdout.contains("\"vector_codec\": \"pq\""), "{stdout}");
    assert!(stdout.contains("(6 per token)"), "{stdout}");

    // A flipped byte in the codebook fails the checksum.
    let codebook = out.join("pq.codebook");
    let mut bytes = std::fs::read(&codebook).unwrap();
    bytes[100] ^= 0x10;
    std::fs::write(&codebook, &bytes).unwrap();
    let verify = tandem_index(&[Path::new("verify"), &out]);
    assert!(!verify.status.success());
    assert!(String::from_utf8_lossy(&verify.stderr).contains("pq.codebook"));
    bytes[100] ^= 0x10;
    std::fs::write(&codebook, &bytes).unwrap();

    // Same-sized but inconsistent shapes are refused even without checksums: subspace bounds
    // that do not split the dimensions, and codes for fewer tokens.
    let bounds = out.join("pq.subspaces");
    let original = std::fs::read(&bounds).unwrap();
    tandem_engine::format::array::write_array(&bounds, "pq.subspaces", &[0u32, 1, 1, 3, 4])
        .unwrap();
    let err = Segment::open_with(&out, Verify::SkipChecksums)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("pq.codebook") && err.contains("do not split"),
        "{err}"
    );
    std::fs::write(&bounds, &original).unwrap();

    let codes = out.join("pq.codes");
    tandem_engine::format::array::write_array(&codes, "pq.codes", &[0u8; 5 * DIM]).unwrap();
    let manifest_path = out.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    let size = std::fs::metadata(&codes).unwrap().len();
    manifest["files"]["pq.codes"]["bytes"] = size.into();
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let err = Segment::open_with(&out, Verify::SkipChecksums)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("pq.codes") && err.contains("20 codes for 6 tokens of 4 subspaces"),
        "{err}"
    );
}
