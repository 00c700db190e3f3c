//! The whole model against sentence-transformers' own output (tests/goldens, made by
//! scripts/goldens/make_minilm_goldens.py): token ids exactly, embeddings at cosine ≥ 0.99999, for the model as
//! published (mean pooling, 256 tokens) and a CLS-pooling 512-token variant of it.
mod common;

use bge_engine::backend::BackendKind;
use bge_engine::{Model, RunOptions};
use common::*;

const MIN_COSINE: f64 = 0.99999;

fn check(model: &Model, run: &GoldenRun, texts: &[String], which: &[usize]) {
    assert_eq!(model.tokenizer.max_seq_length(), run.max_seq_length);
    let inputs: Vec<&str> = which.iter().map(|&i| texts[i].as_str()).collect();
    for (&i, text) in which.iter().zip(&inputs) {
        let enc = model.tokenizer.encode(text, true).unwrap();
        assert_eq!(enc.ids, run.token_ids[i], "token ids of text {i} {text:?}");
        assert_eq!(model.tokenizer.count(text, true).unwrap(), run.token_ids[i].len());
    }
    let got = model.embed(&inputs, &RunOptions::default(), &mut || {}).unwrap();
    for (&i, v) in which.iter().zip(&got) {
        let cos = cosine(v, &run.embeddings[i]);
        assert!(cos >= MIN_COSINE, "text {i} {:?}: cosine {cos} < {MIN_COSINE} ({} {:?})", texts[i], model.backend.name(), model.isa);
    }
}

#[test]
fn cpu_matches_sentence_transformers_mean256() {
    let g = goldens();
    let model = Model::load("all-MiniLM-L6-v2", &minilm(), BackendKind::Cpu).unwrap();
    check(&model, &g.mean256, &g.texts, &(0..g.texts.len()).collect::<Vec<_>>());
}

#[test]
fn cpu_matches_sentence_transformers_cls512() {
    let g = goldens();
    let dir = cls512_variant(&minilm(), &temp_dir("cls512"));
    let model = Model::load("all-MiniLM-L6-v2-cls512", &dir, BackendKind::Cpu).unwrap();
    check(&model, &g.cls512, &g.texts, &(0..g.texts.len()).collect::<Vec<_>>());
}

#[test]
fn reference_matches_sentence_transformers() {
    // The scalar oracle is slow; a spread of short texts and one truncated long one is enough.
    let g = goldens();
    let model = Model::load("all-MiniLM-L6-v2", &minilm(), BackendKind::Reference).unwrap();
    check(&model, &g.mean256, &g.texts, &[0, 3, 7, 10, 13, 16, 17, 25, 31]);
}

#[test]
fn untruncated_count_and_too_long_error() {
    let g = goldens();
    let model = Model::load("all-MiniLM-L6-v2", &minilm(), BackendKind::Cpu).unwrap();
    let long = &g.texts[31];
    let full = model.tokenizer.count(long, false).unwrap();
    assert!(full > 256, "text 31 must exceed the 256-token limit, has {full}");
    assert_eq!(full, g.cls512.token_ids[31].len(), "under 512 tokens the untruncated count is the 512 variant's");
    match model.tokenizer.encode(long, false) {
        Err(bge_engine::Error::InputTooLong { tokens, limit, .. }) => assert_eq!((tokens, limit), (full, 256)),
        other => panic!("expected InputTooLong, got {other:?}"),
    }
}

#[test]
fn bf16_mode_stays_close_to_sentence_transformers() {
    if let Err(e) = bge_engine::backend::cpu::Cpu::bf16() {
        eprintln!("\n*** SKIPPED bf16_mode_stays_close_to_sentence_transformers: {e} ***\n");
        return;
    }
    let g = goldens();
    let model = Model::load("all-MiniLM-L6-v2", &minilm(), BackendKind::CpuBf16).unwrap();
    let texts: Vec<&str> = g.texts.iter().map(String::as_str).collect();
    let got = model.embed(&texts, &RunOptions::default(), &mut || {}).unwrap();
    let worst = got.iter().zip(&g.mean256.embeddings).map(|(a, b)| cosine(a, b)).fold(1.0, f64::min);
    eprintln!("bf16 mode: lowest cosine to sentence-transformers over {} texts: {worst:.6}", texts.len());
    assert!(worst >= 0.999, "bf16 mode: lowest cosine {worst} < 0.999");
}
