//! Cross-encoder rerankers against independent implementations, on the two tiny random-weight
//! rerankers scripts/goldens/make_reranker_goldens.py builds (BERT and XLM-RoBERTa layouts):
//! pair token ids exactly as FlagReranker builds them (long queries and passages among them),
//! scores within 1e-4 of transformers' logits for those ids, of FlagReranker's scores and of
//! sentence-transformers' CrossEncoder where it takes the same tokens;
//! batched scores bitwise the single ones; the wrong kind of model a clear error.
mod common;

use std::path::{Path, PathBuf};

use bge_engine::backend::BackendKind;
use bge_engine::config::ModelKind;
use bge_engine::error::ErrorKind;
use bge_engine::{Model, RunOptions};
use serde::Deserialize;

const MAX_ERROR: f32 = 1e-4;

#[derive(Deserialize)]
struct Pair {
    query: String,
    passage: String,
    ids: Vec<u32>,
    type_ids: Vec<u32>,
    score: f32,
    flag_reranker: f32,
    cross_encoder: Option<f32>,
}

#[derive(Deserialize)]
struct Goldens {
    max_length: usize,
    pairs: Vec<Pair>,
}

fn model_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models").join(name)
}

fn goldens(name: &str) -> Goldens {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/goldens/rerankers.json");
    let mut all: std::collections::HashMap<String, Goldens> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    all.remove(name).unwrap()
}

/// A scratch copy of the committed model `name`, to edit.
fn copy_of(name: &str, tag: &str) -> PathBuf {
    let dir = common::temp_dir(tag);
    for entry in std::fs::read_dir(model_dir(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    dir
}

const RERANKERS: [&str; 2] = ["tiny-reranker-bert", "tiny-reranker-xlmr"];

#[test]
fn pairs_are_tokenised_as_flag_reranker_does() {
    for name in RERANKERS {
        let g = goldens(name);
        let model = Model::load(name, &model_dir(name), BackendKind::Cpu).unwrap();
        assert_eq!(model.spec.kind, ModelKind::Reranker);
        assert_eq!(model.spec.max_seq_length, g.max_length, "{name}");
        let mut longest = 0;
        for p in &g.pairs {
            let e = model.tokenizer.encode_pair(&p.query, &p.passage, &mut || {}).unwrap();
            assert_eq!(e.ids, p.ids, "{name}: {:?} / {:?}", &p.query.chars().take(40).collect::<String>(), &p.passage.chars().take(40).collect::<String>());
            assert_eq!(e.type_ids, p.type_ids, "{name}");
            longest = longest.max(e.ids.len());
        }
        assert_eq!(longest, g.max_length, "{name}: the goldens must hold pairs cut to max_length");
    }
}

#[test]
fn scores_match_transformers_flag_reranker_and_cross_encoder() {
    for name in RERANKERS {
        let g = goldens(name);
        for backend in [BackendKind::Cpu, BackendKind::Reference] {
            let model = Model::load(name, &model_dir(name), backend).unwrap();
            let opts = RunOptions::default();
            let mut worst = 0f32;
            for p in &g.pairs {
                let got = model.rerank(&p.query, &[&p.passage], &opts, &mut || {}).unwrap()[0];
                let what = format!("{name} on {backend:?}: {:?} / {:?}", p.query.chars().take(40).collect::<String>(), p.passage.chars().take(40).collect::<String>());
                assert!((got - p.score).abs() <= MAX_ERROR, "{what}: {got} vs transformers {}", p.score);
                assert!((got - p.flag_reranker).abs() <= MAX_ERROR, "{what}: {got} vs FlagReranker {}", p.flag_reranker);
                if let Some(c) = p.cross_encoder {
                    assert!((got - c).abs() <= MAX_ERROR, "{what}: {got} vs CrossEncoder {c}");
                }
                worst = worst.max((got - p.score).abs());
            }
            eprintln!("{name} on {backend:?}: largest difference from transformers {worst:e}");
        }
    }
}

#[test]
fn batched_scores_are_the_single_ones_bitwise() {
    for name in RERANKERS {
        let g = goldens(name);
        let model = Model::load(name, &model_dir(name), BackendKind::Cpu).unwrap();
        let query = &g.pairs[0].query;
        let passages: Vec<&str> = g.pairs.iter().map(|p| p.passage.as_str()).collect();
        // Small passes, so the batch is cut in several places.
        let opts = RunOptions { max_batch_tokens: 700, ..RunOptions::default() };
        let batched = model.rerank(query, &passages, &opts, &mut || {}).unwrap();
        for (p, b) in passages.iter().zip(&batched) {
            let single = model.rerank(query, &[p], &RunOptions::default(), &mut || {}).unwrap()[0];
            assert_eq!(single.to_bits(), b.to_bits(), "{name}: {:?}", p.chars().take(40).collect::<String>());
        }
    }
}

#[test]
fn the_wrong_kind_of_model_is_an_invalid_parameter() {
    let reranker = Model::load("tiny-reranker-xlmr", &model_dir("tiny-reranker-xlmr"), BackendKind::Cpu).unwrap();
    let e = reranker.embed(&["text"], &RunOptions::default(), &mut || {}).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidParameter);
    assert_eq!(e.to_string(), "model \"tiny-reranker-xlmr\" is a reranker, not an embedder");
    assert!(e.hint().unwrap().contains("bge_rerank"));
    let embedder = Model::load("tiny-bge-m3", &model_dir("tiny-bge-m3"), BackendKind::Cpu).unwrap();
    let e = embedder.rerank("q", &["p"], &RunOptions::default(), &mut || {}).unwrap_err();
    assert_eq!(e.to_string(), "model \"tiny-bge-m3\" is an embedder, not a reranker");
}

#[test]
fn classifiers_with_more_labels_are_refused() {
    let dir = copy_of("tiny-reranker-bert", "reranker-labels");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    config["id2label"] = serde_json::json!({"0": "irrelevant", "1": "relevant"});
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let e = Model::load("two-labels", &dir, BackendKind::Cpu).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::FeatureNotSupported);
    assert!(e.to_string().contains("BertForSequenceClassification with 2 labels (a reranker has one)"), "{e}");
}

#[test]
fn a_reranker_saved_by_sentence_transformers_loads_alike() {
    // CrossEncoder.save writes modules.json with the Transformer alone and its own configs,
    // none of which FlagReranker reads.
    let dir = copy_of("tiny-reranker-bert", "reranker-st");
    let src = model_dir("tiny-reranker-bert");
    std::fs::write(dir.join("modules.json"), r#"[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"}]"#).unwrap();
    std::fs::write(dir.join("sentence_bert_config.json"), r#"{"max_seq_length": 128, "do_lower_case": true}"#).unwrap();
    let saved = Model::load("saved", &dir, BackendKind::Cpu).unwrap();
    let plain = Model::load("plain", &src, BackendKind::Cpu).unwrap();
    assert_eq!(saved.spec.max_seq_length, plain.spec.max_seq_length);
    let g = goldens("tiny-reranker-bert");
    let p = g.pairs.last().unwrap();
    let (a, b) = (saved.rerank(&p.query, &[&p.passage], &RunOptions::default(), &mut || {}).unwrap(), plain.rerank(&p.query, &[&p.passage], &RunOptions::default(), &mut || {}).unwrap());
    assert_eq!(a[0].to_bits(), b[0].to_bits());
}
