//! The whole CUDA encoder on the emulated device: bge-engine's `Model` with the CUDA backend,
//! unchanged (weight upload and narrowing, workspace sizing, cu_seqlens, every launch shape and
//! argument list, the cuBLAS GEMM calls, pooling on the device), against the committed
//! sentence-transformers goldens at the GPU's bar, cosine >= 0.9999. Needs the test model
//! (scripts/models/fetch.sh models, or $BGE_TEST_MODEL_DIR), as the engine's goldens do.
use std::path::{Path, PathBuf};

use bge_engine::backend::BackendKind;
use bge_engine::{Model, RunOptions};
use serde::Deserialize;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn minilm() -> PathBuf {
    let root = std::env::var_os("BGE_TEST_MODEL_DIR").map(PathBuf::from).unwrap_or_else(|| repo().join("models"));
    let dir = root.join("all-MiniLM-L6-v2");
    assert!(dir.join("config.json").is_file(), "test model missing: run `scripts/models/fetch.sh models` in the repository root (or set BGE_TEST_MODEL_DIR)");
    dir
}

#[derive(Deserialize)]
struct GoldenRun {
    embeddings: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct Goldens {
    texts: Vec<String>,
    mean256: GoldenRun,
    cls512: GoldenRun,
}

fn goldens() -> Goldens {
    let path = repo().join("engine/tests/goldens/all-MiniLM-L6-v2.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// A copy of the model directory with CLS pooling and max_seq_length 512 (weights symlinked):
/// the edit scripts/goldens/golden_texts.py makes for the cls512 goldens.
fn cls512_variant(src: &Path) -> PathBuf {
    let dest = std::env::temp_dir().join(format!("bge-cuda-emulator-cls512-{}", std::process::id())).join("all-MiniLM-L6-v2");
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::create_dir_all(dest.join("1_Pooling")).unwrap();
    for entry in std::fs::read_dir(src).unwrap().flatten() {
        if entry.path().is_file() && entry.file_name() != "sentence_bert_config.json" {
            std::os::unix::fs::symlink(entry.path(), dest.join(entry.file_name())).unwrap();
        }
    }
    let edit = |file: &str, f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join(file)).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(dest.join(file), v.to_string()).unwrap();
    };
    edit("1_Pooling/config.json", &|v| {
        v["pooling_mode_cls_token"] = true.into();
        v["pooling_mode_mean_tokens"] = false.into();
    });
    edit("sentence_bert_config.json", &|v| v["max_seq_length"] = 512.into());
    dest
}

fn check(dir: &Path, texts: &[String], want: &[Vec<f32>], what: &str) {
    bge_cuda_emulator::device();
    let model = Model::load("all-MiniLM-L6-v2", dir, BackendKind::Cuda).unwrap();
    assert_eq!(model.backend, BackendKind::Cuda);
    let launches = bge_cuda_emulator::launches();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let got = model.embed(&refs, &RunOptions::default(), &mut || {}).unwrap();
    assert!(bge_cuda_emulator::launches() > launches, "the embeddings were not computed by the emulated kernels");
    let mut worst = 1.0f64;
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(a.iter().all(|v| v.is_finite()), "{what}: text {i} has non-finite values");
        let c = cosine(a, b);
        worst = worst.min(c);
        assert!(c >= 0.9999, "{what}: text {i}: cosine {c} vs sentence-transformers");
    }
    eprintln!("{what}: {} texts, worst cosine {worst:.7}", got.len());
}

#[test]
fn emulated_gpu_encoder_matches_goldens_mean256() {
    let g = goldens();
    check(&minilm(), &g.texts, &g.mean256.embeddings, "mean pooling, 256 tokens");
}

#[test]
fn emulated_gpu_encoder_matches_goldens_cls512() {
    let g = goldens();
    let dir = cls512_variant(&minilm());
    check(&dir, &g.texts, &g.cls512.embeddings, "CLS pooling, 512 tokens");
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}

/// The rerankers' scores (the CUDA encoder, then the classification head on the host) against
/// transformers' logits for FlagReranker's pairs (engine/tests/goldens/rerankers.json), at the
/// bar fp16 GEMMs allow; short and long pairs of both layouts.
#[test]
fn emulated_gpu_rerankers_match_goldens() {
    #[derive(Deserialize)]
    struct Pair {
        query: String,
        passage: String,
        score: f32,
    }
    #[derive(Deserialize)]
    struct Reranker {
        pairs: Vec<Pair>,
    }
    let path = repo().join("engine/tests/goldens/rerankers.json");
    let all: std::collections::HashMap<String, Reranker> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    bge_cuda_emulator::device();
    for name in ["tiny-reranker-bert", "tiny-reranker-xlmr"] {
        let model = Model::load(name, &repo().join("engine/tests/models").join(name), BackendKind::Cuda).unwrap();
        assert_eq!(model.backend, BackendKind::Cuda);
        let launches = bge_cuda_emulator::launches();
        // The first query's pairs (short ones) and the long pairs at the end.
        let pairs: Vec<&Pair> = all[name].pairs.iter().take(6).chain(all[name].pairs.iter().rev().take(3)).collect();
        let mut worst = 0f32;
        for p in &pairs {
            let got = model.rerank(&p.query, &[&p.passage], &RunOptions::default(), &mut || {}).unwrap()[0];
            assert!((got - p.score).abs() < 2e-3, "{name}: {got} vs transformers {}", p.score);
            worst = worst.max((got - p.score).abs());
        }
        assert!(bge_cuda_emulator::launches() > launches, "{name}: the scores were not computed by the emulated kernels");
        eprintln!("{name}: {} pairs, largest difference {worst:e}", pairs.len());
    }
}
