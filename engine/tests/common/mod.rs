//! Shared test helpers: where the test model lives, goldens, the CLS/512 variant, and random
//! data, error measure, pools and batches for the kernel tests.
#![allow(dead_code)]
use std::path::{Path, PathBuf};

use bge_engine::batch::PackedBatch;
use bge_engine::tokenize::Encoded;
use rand::rngs::StdRng;
use rand::Rng;
use serde::Deserialize;

/// The directory holding all-MiniLM-L6-v2 (scripts/models/fetch.sh models), or $BGE_TEST_MODEL_DIR.
pub fn model_root() -> PathBuf {
    let root = std::env::var_os("BGE_TEST_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../models"));
    assert!(
        root.join("all-MiniLM-L6-v2/config.json").is_file(),
        "test model missing: run `scripts/models/fetch.sh models` in the repository root (or set BGE_TEST_MODEL_DIR)"
    );
    root
}

pub fn minilm() -> PathBuf {
    model_root().join("all-MiniLM-L6-v2")
}

/// The tiny random-weight BGE-M3-shaped model committed with the tests
/// (scripts/goldens/make_m3_goldens.py); needs no download.
pub fn tiny_m3() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models/tiny-bge-m3")
}

/// A copy of `src` with CLS pooling and max_seq_length 512, large files symlinked; the same
/// edit scripts/goldens/golden_texts.py makes for the goldens.
pub fn cls512_variant(src: &Path, dest_root: &Path) -> PathBuf {
    let dest = dest_root.join("all-MiniLM-L6-v2-cls512");
    std::fs::create_dir_all(dest.join("1_Pooling")).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        if entry.path().is_file() && entry.file_name() != "sentence_bert_config.json" {
            let _ = std::os::unix::fs::symlink(entry.path(), dest.join(entry.file_name()));
        }
    }
    let mut pooling: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("1_Pooling/config.json")).unwrap()).unwrap();
    pooling["pooling_mode_cls_token"] = true.into();
    pooling["pooling_mode_mean_tokens"] = false.into();
    std::fs::write(dest.join("1_Pooling/config.json"), pooling.to_string()).unwrap();
    let mut sbert: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("sentence_bert_config.json")).unwrap()).unwrap();
    sbert["max_seq_length"] = 512.into();
    std::fs::write(dest.join("sentence_bert_config.json"), sbert.to_string()).unwrap();
    dest
}

#[derive(Deserialize)]
pub struct GoldenRun {
    pub max_seq_length: usize,
    pub token_ids: Vec<Vec<u32>>,
    pub embeddings: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
pub struct Goldens {
    pub texts: Vec<String>,
    pub mean256: GoldenRun,
    pub cls512: GoldenRun,
}

pub fn goldens() -> Goldens {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/goldens/all-MiniLM-L6-v2.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bge-engine-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `n` values drawn uniformly from (-scale, scale).
pub fn random(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// max |got - want| relative to the largest |want| (plus 1, for outputs near zero); fails on
/// any non-finite value, which is what an unwritten (NaN-poisoned) element looks like.
pub fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    if let Some(i) = got.iter().position(|v| !v.is_finite()) {
        panic!("non-finite output at {i} of {}: {}", got.len(), got[i]);
    }
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())) + 1.0;
    got.iter().zip(want).fold(0.0f32, |m, (g, w)| m.max((g - w).abs())) / scale
}

pub fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap()
}

/// A packed batch of sequences of these lengths (token ids all 0: the kernels read lengths and
/// positions only).
pub fn batch_of(lens: &[usize]) -> PackedBatch {
    let encs: Vec<Encoded> = lens.iter().map(|&l| Encoded { ids: vec![0; l], type_ids: vec![0; l] }).collect();
    PackedBatch::new(&encs.iter().collect::<Vec<_>>())
}
