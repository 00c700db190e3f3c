//! XLM-RoBERTa and BGE-M3's outputs against independent implementations, on the tiny
//! random-weight model that scripts/goldens/make_m3_goldens.py builds (tests/models/tiny-bge-m3):
//! token ids exactly; dense and query embeddings (sentence-transformers) at cosine ≥ 0.99999;
//! sparse weights (FlagEmbedding) within 1e-5 per weight, keyed by id and by token text;
//! ColBERT vectors (FlagEmbedding) at cosine ≥ 0.99999 each.
//!
//! One exception, measured: on the 7009-token document, PyTorch's fp32 weights themselves are
//! up to 1.1e-5 away from an f64 evaluation (the reference backend), ours 0.7e-5; there the
//! comparison with FlagEmbedding allows 2e-5, and a separate test holds the CPU backend to
//! 1e-5 of the f64 reference.
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bge_engine::backend::BackendKind;
use bge_engine::batch::PackedBatch;
use bge_engine::config::PositionIds;
use bge_engine::error::ErrorKind;
use bge_engine::tokenize::Encoded;
use bge_engine::{Error, Model, RunOptions, TextRole};
use common::*;
use serde::Deserialize;

const MIN_COSINE: f64 = 0.99999;
const MAX_SPARSE_ERROR: f32 = 1e-5;
/// For inputs over LONG tokens against FlagEmbedding (see the module comment).
const MAX_SPARSE_ERROR_LONG: f32 = 2e-5;
const LONG: usize = 2048;

#[derive(Deserialize)]
struct Sparse {
    ids: Vec<(u32, f32)>,
    tokens: Vec<(String, f32)>,
}

#[derive(Deserialize)]
struct Colbert {
    count: usize,
    rows: HashMap<String, Vec<f32>>,
}

#[derive(Deserialize)]
struct Score {
    query: usize,
    passage: usize,
    colbert: f64,
    lexical: f64,
}

#[derive(Deserialize)]
struct PromptVariant {
    config: serde_json::Value,
    dense: Vec<Vec<f32>>,
    query_dense: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct M3Goldens {
    max_seq_length: usize,
    query_prompt: String,
    texts: Vec<String>,
    token_ids: Vec<Vec<u32>>,
    dense: Vec<Vec<f32>>,
    query_dense: Vec<Vec<f32>>,
    sparse: Vec<Sparse>,
    colbert: Vec<Colbert>,
    scores: Vec<Score>,
    prompt_variants: HashMap<String, PromptVariant>,
}

fn goldens() -> M3Goldens {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/goldens/tiny-bge-m3.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn load(dir: &Path, backend: BackendKind) -> Model {
    Model::load("tiny-bge-m3", dir, backend).unwrap()
}

/// Texts short enough for the scalar reference backend, spread over the kinds of input.
const SHORT: &[usize] = &[0, 3, 7, 10, 16, 26, 34, 35, 36, 37, 38, 40];

fn refs<'a>(texts: &'a [String], which: &[usize]) -> Vec<&'a str> {
    which.iter().map(|&i| texts[i].as_str()).collect()
}

fn check_dense(got: &[Vec<f32>], want: &[Vec<f32>], which: &[usize], what: &str) {
    for (v, &i) in got.iter().zip(which) {
        let cos = cosine(v, &want[i]);
        assert!(cos >= MIN_COSINE, "{what} of text {i}: cosine {cos}");
    }
}

fn check_sparse(model: &Model, got: &[bge_engine::heads::sparse::SparseWeights], want: &[Sparse], which: &[usize], lengths: &[Vec<u32>]) {
    for (s, &i) in got.iter().zip(which) {
        let w = &want[i];
        let tolerance = if lengths[i].len() > LONG { MAX_SPARSE_ERROR_LONG } else { MAX_SPARSE_ERROR };
        // Weights by id: every id either side within 1e-5 (a weight that tiny may be on
        // either side of zero in the two implementations, so absent counts as 0).
        let got_ids: HashMap<u32, f32> = s.weights.iter().copied().collect();
        let want_ids: HashMap<u32, f32> = w.ids.iter().copied().collect();
        for id in got_ids.keys().chain(want_ids.keys()) {
            let (g, e) = (got_ids.get(id).copied().unwrap_or(0.0), want_ids.get(id).copied().unwrap_or(0.0));
            assert!((g - e).abs() <= tolerance, "text {i}, id {id}: {g} vs {e}");
        }
        // The order of first appearance decides which id a shared token text keeps.
        let strong: Vec<u32> = w.ids.iter().filter(|(_, v)| *v > 1e-4).map(|(id, _)| *id).collect();
        let got_order: Vec<u32> = s.weights.iter().map(|(id, _)| *id).filter(|id| strong.contains(id)).collect();
        assert_eq!(got_order, strong, "text {i}: order of first appearance");
        let by_token = s.by_token_text(|id| model.tokenizer.token_text(id)).unwrap();
        let got_keys: Vec<&str> = by_token.iter().map(|(t, _)| t.as_str()).collect();
        let want_keys: Vec<&str> = w.tokens.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(got_keys, want_keys, "text {i}: token keys");
        for ((t, g), (_, e)) in by_token.iter().zip(&w.tokens) {
            assert!((g - e).abs() <= tolerance, "text {i}, token {t:?}: {g} vs {e}");
        }
    }
}

fn check_colbert(got: &[bge_engine::heads::colbert::ColbertVectors], want: &[Colbert], which: &[usize]) {
    for (c, &i) in got.iter().zip(which) {
        let w = &want[i];
        assert_eq!(c.rows(), w.count, "text {i}: ColBERT vector count");
        for (row, v) in &w.rows {
            let r: usize = row.parse().unwrap();
            let cos = cosine(&c.data[r * c.dim..(r + 1) * c.dim], v);
            assert!(cos >= MIN_COSINE, "text {i}, ColBERT row {r}: cosine {cos}");
        }
    }
}

#[test]
fn cpu_matches_sentence_transformers_and_flag_embedding() {
    let g = goldens();
    let model = load(&tiny_m3(), BackendKind::Cpu);
    assert_eq!(model.spec.max_seq_length, g.max_seq_length);
    assert_eq!(model.spec.position_ids, PositionIds::AfterPadding { pad_token_id: 1 });
    assert_eq!(model.prompt(TextRole::Query), Some(g.query_prompt.as_str()));
    assert_eq!(model.prompt(TextRole::Passage), None);
    let all: Vec<usize> = (0..g.texts.len()).collect();
    let texts = refs(&g.texts, &all);
    for (i, t) in texts.iter().enumerate() {
        assert_eq!(model.encode(t, TextRole::Passage, true, &mut || {}).unwrap().ids, g.token_ids[i], "token ids of text {i} {t:?}");
    }
    assert!(g.token_ids.iter().any(|ids| ids.len() > 5000), "the goldens include a long document");
    let opts = RunOptions::default();
    check_dense(&model.embed(&texts, &opts, &mut || {}).unwrap(), &g.dense, &all, "dense");
    check_dense(&model.embed_queries(&texts, &opts, &mut || {}).unwrap(), &g.query_dense, &all, "query");
    check_sparse(&model, &model.embed_sparse(&texts, &opts, &mut || {}).unwrap(), &g.sparse, &all, &g.token_ids);
    check_colbert(&model.embed_colbert(&texts, &opts, &mut || {}).unwrap(), &g.colbert, &all);
}

#[test]
fn reference_matches_sentence_transformers_and_flag_embedding() {
    let g = goldens();
    let model = load(&tiny_m3(), BackendKind::Reference);
    let texts = refs(&g.texts, SHORT);
    let opts = RunOptions::default();
    check_dense(&model.embed(&texts, &opts, &mut || {}).unwrap(), &g.dense, SHORT, "dense");
    check_sparse(&model, &model.embed_sparse(&texts, &opts, &mut || {}).unwrap(), &g.sparse, SHORT, &g.token_ids);
    check_colbert(&model.embed_colbert(&texts, &opts, &mut || {}).unwrap(), &g.colbert, SHORT);
}

#[test]
fn long_document_within_1e_5_of_the_f64_reference() {
    let g = goldens();
    let long = g.token_ids.iter().position(|ids| ids.len() > 5000).unwrap();
    let text = [g.texts[long].as_str()];
    let opts = RunOptions::default();
    let cpu = load(&tiny_m3(), BackendKind::Cpu).embed_sparse(&text, &opts, &mut || {}).unwrap().remove(0);
    let exact = load(&tiny_m3(), BackendKind::Reference).embed_sparse(&text, &opts, &mut || {}).unwrap().remove(0);
    let exact: HashMap<u32, f32> = exact.weights.into_iter().collect();
    assert_eq!(cpu.weights.len(), exact.len());
    for (id, w) in cpu.weights {
        assert!((w - exact[&id]).abs() <= MAX_SPARSE_ERROR, "id {id}: {w} vs {}", exact[&id]);
    }
}

#[test]
fn sparse_and_colbert_outputs_are_batch_invariant() {
    let g = goldens();
    let model = load(&tiny_m3(), BackendKind::Cpu);
    let texts = refs(&g.texts, SHORT);
    let one = RunOptions { threads: 1, ..Default::default() };
    let alone_s: Vec<_> = texts.iter().map(|t| model.embed_sparse(&[t], &one, &mut || {}).unwrap().remove(0)).collect();
    let alone_c: Vec<_> = texts.iter().map(|t| model.embed_colbert(&[t], &one, &mut || {}).unwrap().remove(0)).collect();
    let alone_d: Vec<_> = texts.iter().map(|t| model.embed(&[t], &one, &mut || {}).unwrap().remove(0)).collect();
    for (threads, max_batch_tokens) in [(2, 1 << 20), (3, 40)] {
        let opts = RunOptions { threads, max_batch_tokens, ..Default::default() };
        assert_eq!(model.embed_sparse(&texts, &opts, &mut || {}).unwrap(), alone_s);
        assert_eq!(model.embed_colbert(&texts, &opts, &mut || {}).unwrap(), alone_c);
        assert_eq!(model.embed(&texts, &opts, &mut || {}).unwrap(), alone_d);
    }
}

#[test]
fn colbert_and_lexical_scores_match_flag_embedding() {
    let g = goldens();
    let model = load(&tiny_m3(), BackendKind::Cpu);
    let opts = RunOptions::default();
    for s in &g.scores {
        let pair = [g.texts[s.query].as_str(), g.texts[s.passage].as_str()];
        let c = model.embed_colbert(&pair, &opts, &mut || {}).unwrap();
        let colbert = bge_engine::heads::colbert::maxsim(&c[0].data, &c[1].data, c[0].dim, &mut || {});
        assert!((colbert - s.colbert).abs() <= 1e-5, "ColBERT score of texts {} and {}: {colbert} vs {}", s.query, s.passage, s.colbert);
        let w = model.embed_sparse(&pair, &opts, &mut || {}).unwrap();
        let lexical = w[0].inner_product(&w[1]);
        assert!((lexical - s.lexical).abs() <= 1e-5 * s.lexical.abs().max(1.0), "lexical score: {lexical} vs {}", s.lexical);
    }
}

#[test]
fn roberta_position_ids() {
    let rule = PositionIds::AfterPadding { pad_token_id: 1 };
    let a = Encoded { ids: vec![0, 5, 1, 6, 1, 1, 7, 2], type_ids: vec![0; 8] };
    let b = Encoded { ids: vec![0, 2], type_ids: vec![0; 2] };
    let batch = PackedBatch::with_positions(&[&a, &b], rule);
    assert_eq!(batch.positions, vec![2, 3, 1, 4, 1, 1, 5, 6, 2, 3]);
    assert_eq!(PackedBatch::new(&[&b]).positions, vec![0, 1]);
}

/// A copy of the tiny model with every file linked except those `edit` rewrites.
fn variant(tag: &str, edit: impl FnOnce(&Path)) -> PathBuf {
    let dest = temp_dir(tag).join("tiny-bge-m3");
    link_tree(&tiny_m3(), &dest);
    edit(&dest);
    dest
}

fn link_tree(src: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        if entry.path().is_dir() {
            link_tree(&entry.path(), &dest.join(entry.file_name()));
        } else {
            std::os::unix::fs::symlink(entry.path(), dest.join(entry.file_name())).unwrap();
        }
    }
}

fn replace(path: &Path, contents: impl AsRef<[u8]>) {
    let _ = std::fs::remove_file(path);
    std::fs::write(path, contents).unwrap();
}

#[test]
fn prompts_resolve_as_sentence_transformers_does() {
    let g = goldens();
    let which: Vec<usize> = (0..8).collect();
    let texts = refs(&g.texts, &which);
    for (name, v) in &g.prompt_variants {
        let dir = variant(&format!("prompts-{name}"), |d| {
            let path = d.join("config_sentence_transformers.json");
            let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            for (k, val) in v.config.as_object().unwrap() {
                cfg[k] = val.clone();
            }
            replace(&path, cfg.to_string());
        });
        let model = load(&dir, BackendKind::Cpu);
        let opts = RunOptions::default();
        let dense: Vec<Vec<f32>> = v.dense.clone();
        check_dense(&model.embed(&texts, &opts, &mut || {}).unwrap(), &dense, &which, &format!("{name} dense"));
        check_dense(&model.embed_queries(&texts, &opts, &mut || {}).unwrap(), &v.query_dense, &which, &format!("{name} query"));
        // Token counts include the prompt.
        let n = model.count_tokens(texts[3], TextRole::Query, true, &mut || {}).unwrap();
        assert_eq!(n, model.tokenizer.count(&format!("{}{}", model.prompt(TextRole::Query).unwrap_or(""), texts[3]), true).unwrap());
    }
    // "default-only": a default prompt for passages, and encode_query's empty "query" prompt.
    let model = load(&variant("prompts-check", |d| replace(&d.join("config_sentence_transformers.json"), r#"{"prompts": {"document": "passage: "}, "default_prompt_name": "document"}"#)), BackendKind::Cpu);
    assert_eq!(model.prompt(TextRole::Passage), Some("passage: "));
    assert_eq!(model.prompt(TextRole::Query), None);
    assert!(model.count_tokens("x", TextRole::Passage, true, &mut || {}).unwrap() > model.count_tokens("x", TextRole::Query, true, &mut || {}).unwrap());
}

#[test]
fn documented_query_prompt_only_without_a_query_prompt() {
    let with_none = variant("card", |d| replace(&d.join("config_sentence_transformers.json"), "{}"));
    let card = "Represent this sentence for searching relevant passages: ";
    let dest = with_none.parent().unwrap().join("bge-small-en-v1.5");
    std::fs::rename(&with_none, &dest).unwrap();
    let model = Model::load("bge-small-en-v1.5", &dest, BackendKind::Cpu).unwrap();
    assert_eq!(model.prompt(TextRole::Query), Some(card));
    let model = Model::load("bge-m3", &dest, BackendKind::Cpu).unwrap();
    assert_eq!(model.prompt(TextRole::Query), None);
    let own = load(&tiny_m3(), BackendKind::Cpu);
    let renamed = Model::load("bge-small-en-v1.5", &tiny_m3(), BackendKind::Cpu).unwrap();
    assert_eq!(renamed.prompt(TextRole::Query), own.prompt(TextRole::Query), "a model's own query prompt wins over its card's");
}

#[test]
fn prefixed_weights_and_sentence_transformers_6_configs_load_the_same() {
    let g = goldens();
    let which: Vec<usize> = (0..6).collect();
    let texts = refs(&g.texts, &which);
    // model.safetensors with every tensor under "roberta." (as XLMRobertaForMaskedLM saves).
    let prefixed = variant("prefixed", |d| {
        let bytes = std::fs::read(tiny_m3().join("model.safetensors")).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        let renamed: serde_json::Map<String, serde_json::Value> =
            header.into_iter().map(|(k, v)| if k == "__metadata__" { (k, v) } else { (format!("roberta.{k}"), v) }).collect();
        let mut text = serde_json::to_string(&renamed).unwrap();
        while !text.len().is_multiple_of(8) {
            text.push(' ');
        }
        let mut out = (text.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(&bytes[8 + n..]);
        replace(&d.join("model.safetensors"), out);
    });
    // sentence-transformers 6 layout: `pooling_mode` in 1_Pooling, the length in tokenizer_config.json.
    let st6 = variant("st6", |d| {
        replace(&d.join("1_Pooling/config.json"), r#"{"embedding_dimension": 32, "pooling_mode": "cls", "include_prompt": true}"#);
        replace(&d.join("sentence_bert_config.json"), r#"{"transformer_task": "feature-extraction"}"#);
    });
    for dir in [prefixed, st6] {
        let model = load(&dir, BackendKind::Cpu);
        assert_eq!(model.spec.max_seq_length, 8192);
        check_dense(&model.embed(&texts, &RunOptions::default(), &mut || {}).unwrap(), &g.dense, &which, &dir.display().to_string());
    }
    let no_prompt_pooling = variant("include-prompt", |d| {
        replace(&d.join("1_Pooling/config.json"), r#"{"embedding_dimension": 32, "pooling_mode": "mean", "include_prompt": false}"#)
    });
    let e = Model::load("x", &no_prompt_pooling, BackendKind::Cpu).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::FeatureNotSupported, "{e}");
}

#[test]
fn missing_heads_are_clear_errors() {
    let opts = RunOptions::default();
    // The .pt is there but not converted: the hint says how to convert it.
    let unconverted = variant("unconverted", |d| std::fs::remove_file(d.join("sparse_linear.safetensors")).unwrap());
    let model = load(&unconverted, BackendKind::Cpu);
    assert_eq!(model.heads.available(), (false, true));
    assert_eq!(model.embed(&["dense still works"], &opts, &mut || {}).unwrap()[0].len(), 32);
    assert!(model.embed_colbert(&["ColBERT too"], &opts, &mut || {}).is_ok());
    let e = model.embed_sparse(&["x"], &opts, &mut || {}).unwrap_err();
    assert!(matches!(&e, Error::MissingHead { path, .. } if path.ends_with("sparse_linear.safetensors")), "{e}");
    assert_eq!(e.kind(), ErrorKind::ModelFileMissing);
    assert!(e.to_string().contains("has no sparse head"), "{e}");
    assert!(e.hint().unwrap().contains("convert_m3_heads.py"), "{:?}", e.hint());
    // No head files at all: the hint says where BGE-M3's heads come from.
    let bare = variant("bare", |d| {
        for f in ["sparse_linear.safetensors", "sparse_linear.pt", "colbert_linear.safetensors", "colbert_linear.pt"] {
            std::fs::remove_file(d.join(f)).unwrap();
        }
    });
    let model = load(&bare, BackendKind::Cpu);
    let e = model.embed_colbert(&["x"], &opts, &mut || {}).unwrap_err();
    assert!(e.to_string().contains("has no ColBERT head") && e.to_string().contains("colbert_linear.safetensors"), "{e}");
    assert!(e.hint().unwrap().contains("scripts/models/fetch.sh"), "{:?}", e.hint());
    // A head of the wrong width is a corrupt file, reported at load.
    let wrong = variant("wrong-head", |d| {
        std::fs::copy(tiny_m3().join("colbert_linear.safetensors"), d.join("sparse.tmp")).unwrap();
        replace(&d.join("sparse_linear.safetensors"), std::fs::read(d.join("sparse.tmp")).unwrap());
    });
    let e = Model::load("x", &wrong, BackendKind::Cpu).err().unwrap();
    assert!(matches!(e, Error::TensorShape { .. }), "{e}");
}

#[test]
fn sparse_outputs_have_no_special_tokens_and_sparsevec_text_is_one_based() {
    let model = load(&tiny_m3(), BackendKind::Cpu);
    let special = model.tokenizer.special_ids().to_vec();
    assert_eq!(special, vec![0, 1, 2, 3], "<s> <pad> </s> <unk>");
    let out = model.embed_sparse(&["<s> a <pad> b </s> c <unk> ჯ", ""], &RunOptions::default(), &mut || {}).unwrap();
    assert!(out[0].weights.iter().all(|(id, w)| !special.contains(id) && *w > 0.0));
    assert!(out[1].weights.is_empty());
    assert_eq!(out[1].sparsevec_literal(581), "{}/581");
    let text = out[0].sparsevec_literal(581);
    let mut sorted = out[0].weights.clone();
    sorted.sort_by_key(|w| w.0);
    let first = format!("{{{}:{}", sorted[0].0 + 1, sorted[0].1);
    assert!(text.starts_with(&first) && text.ends_with("}/581"), "{text}");
}
