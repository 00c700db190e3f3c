//! Decoder embedders against transformers (tests/goldens/tiny-*.json, made by
//! scripts/goldens/make_decoder_goldens.py from tiny random-weight models committed in tests/models):
//! token ids exactly, embeddings at cosine ≥ 0.99999 in f32, for passages of many lengths (longer
//! than the sliding window, truncated at max_seq_length) embedded in mixed-length batches, and for
//! queries with the default retrieval instruction and with another task.
mod common;

use std::path::{Path, PathBuf};

use bge_engine::backend::BackendKind;
use bge_engine::{Model, RunOptions};
use common::*;
use serde::Deserialize;

const MIN_COSINE: f64 = 0.99999;

#[derive(Deserialize)]
struct Query {
    query: String,
    task: String,
    default_task: bool,
    token_ids: Vec<u32>,
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct DecoderGoldens {
    max_seq_length: usize,
    texts: Vec<String>,
    token_ids: Vec<Vec<u32>>,
    embeddings: Vec<Vec<f32>>,
    queries: Vec<Query>,
}

fn model_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models").join(name)
}

fn goldens(name: &str) -> DecoderGoldens {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/goldens/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn worst_cosine(got: &[Vec<f32>], want: &[&Vec<f32>]) -> (f64, usize) {
    got.iter().zip(want).enumerate().map(|(i, (a, b))| (cosine(a, b), i)).fold((1.0, 0), |w, c| if c.0 < w.0 { c } else { w })
}

/// Every golden text in one call (batched by length into mixed-length passes), every query
/// with the default and another task; returns the lowest cosine of each.
fn check_model(model: &Model, g: &DecoderGoldens, min_cosine: f64) {
    assert_eq!(model.tokenizer.max_seq_length(), g.max_seq_length);
    let texts: Vec<&str> = g.texts.iter().map(String::as_str).collect();
    for (i, text) in texts.iter().enumerate() {
        let enc = model.tokenizer.encode(text, true).unwrap();
        assert_eq!(enc.ids, g.token_ids[i], "token ids of text {i} {text:?}");
        assert_eq!(model.tokenizer.count(text, true).unwrap(), g.token_ids[i].len());
    }
    // Small batches so several passes mix lengths.
    let opts = RunOptions { max_batch_tokens: 300, ..RunOptions::default() };
    let got = model.embed(&texts, &opts, &mut || {}).unwrap();
    let (worst, at) = worst_cosine(&got, &g.embeddings.iter().collect::<Vec<_>>());
    eprintln!("{} {} {:?}: lowest passage cosine {worst:.7} (text {at})", model.spec.name, model.precision, model.isa);
    assert!(worst >= min_cosine, "text {at} {:?}: cosine {worst} < {min_cosine}", g.texts[at]);

    for default_task in [true, false] {
        let qs: Vec<&Query> = g.queries.iter().filter(|q| q.default_task == default_task).collect();
        let inputs: Vec<&str> = qs.iter().map(|q| q.query.as_str()).collect();
        let got = if default_task {
            model.embed_queries(&inputs, &opts, &mut || {}).unwrap()
        } else {
            model.embed_queries_for_task(&inputs, &qs[0].task, &opts, &mut || {}).unwrap()
        };
        for q in &qs {
            let prompt = if default_task { model.prompt(bge_engine::TextRole::Query).unwrap().to_string() } else { model.spec.prompt_for_task(&q.task) };
            let enc = model.tokenizer.encode_prompted(&prompt, &q.query, true, &mut || {}).unwrap();
            assert_eq!(enc.ids, q.token_ids, "token ids of query {:?} for task {:?}", q.query, q.task);
        }
        let (worst, at) = worst_cosine(&got, &qs.iter().map(|q| &q.embedding).collect::<Vec<_>>());
        assert!(worst >= min_cosine, "query {:?} (default task: {default_task}): cosine {worst} < {min_cosine}", qs[at].query);
    }
}

#[test]
fn gemma2_cpu_matches_transformers() {
    let model = Model::load("tiny-gemma2", &model_dir("tiny-gemma2"), BackendKind::Cpu).unwrap();
    check_model(&model, &goldens("tiny-gemma2"), MIN_COSINE);
}

#[test]
fn gemma2_reference_matches_transformers() {
    let model = Model::load("tiny-gemma2", &model_dir("tiny-gemma2"), BackendKind::Reference).unwrap();
    check_model(&model, &goldens("tiny-gemma2"), MIN_COSINE);
}

#[test]
fn gemma2_bf16_mode_stays_close_to_transformers() {
    if let Err(e) = bge_engine::backend::cpu::Cpu::bf16() {
        eprintln!("\n*** SKIPPED gemma2_bf16_mode_stays_close_to_transformers: {e} ***\n");
        return;
    }
    let model = Model::load("tiny-gemma2", &model_dir("tiny-gemma2"), BackendKind::CpuBf16).unwrap();
    assert_eq!(model.precision, "bf16");
    check_model(&model, &goldens("tiny-gemma2"), 0.999);
}

#[test]
fn gemma2_spec_from_config() {
    let spec = bge_engine::config::ModelSpec::load("tiny-gemma2", &model_dir("tiny-gemma2")).unwrap();
    let d = spec.decoder.as_ref().expect("a decoder");
    assert_eq!((spec.hidden_size, spec.num_heads, d.num_kv_heads, d.head_dim), (48, 4, 2, 24));
    assert_eq!(d.layer_windows, vec![Some(8), None, Some(8), None]);
    assert_eq!(d.attention_softcap, Some(2.0));
    assert_eq!(d.attention_scale, (1.0 / 36f64.sqrt()) as f32);
    assert_eq!(d.embedding_scale, Some(48f64.sqrt() as f32));
    assert!(d.norm_adds_one && d.sandwich_norms && !d.qk_norm);
    assert!(spec.pooling.last_token && spec.pooling.modes() == 1 && spec.normalize);
    assert_eq!(spec.dimensions(), 48);
    assert_eq!(
        spec.query_prompt(),
        Some("<instruct>Given a web search query, retrieve relevant passages that answer the query.\n<query>")
    );
}

/// A copy of the tiny Gemma2 directory with config.json rewritten by `edit`.
fn with_config(tag: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let src = model_dir("tiny-gemma2");
    let dest = temp_dir(tag).join("tiny-gemma2");
    copy_dir(&src, &dest);
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(dest.join("config.json"), cfg.to_string()).unwrap();
    dest
}

fn copy_dir(src: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &dest.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), dest.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn gemma2_transformers4_config_spelling_gives_the_same_model() {
    // transformers 4.x writes rope_theta and torch_dtype, no layer_types (even layers slide),
    // and the published config also carries a duplicate sliding_window_size.
    let dir = with_config("gemma2-v4", |cfg| {
        let m = cfg.as_object_mut().unwrap();
        let theta = m.remove("rope_parameters").unwrap()["rope_theta"].clone();
        m.insert("rope_theta".into(), theta);
        m.remove("layer_types");
        let dtype = m.remove("dtype").unwrap();
        m.insert("torch_dtype".into(), dtype);
        m.insert("sliding_window_size".into(), 8.into());
        m.insert("hidden_act".into(), "gelu_pytorch_tanh".into());
        m.insert("cache_implementation".into(), "hybrid".into());
    });
    let v5 = bge_engine::config::ModelSpec::load("tiny-gemma2", &model_dir("tiny-gemma2")).unwrap();
    let v4 = bge_engine::config::ModelSpec::load("tiny-gemma2", &dir).unwrap();
    assert_eq!(v4.decoder, v5.decoder);
    let model = Model::load("tiny-gemma2", &dir, BackendKind::Cpu).unwrap();
    check_model(&model, &goldens("tiny-gemma2"), MIN_COSINE);
}

#[test]
fn gemma2_config_switches_are_read() {
    // Each switch changes the model: the goldens must then fail, so the engine reads them.
    let g = goldens("tiny-gemma2");
    let texts: Vec<&str> = g.texts.iter().map(String::as_str).collect();
    for (tag, edit) in [
        ("no-softcap", Box::new(|c: &mut serde_json::Value| c["attn_logit_softcapping"] = serde_json::Value::Null) as Box<dyn Fn(&mut serde_json::Value)>),
        ("no-window", Box::new(|c: &mut serde_json::Value| c["sliding_window"] = 1000.into())),
        ("scalar", Box::new(|c: &mut serde_json::Value| c["query_pre_attn_scalar"] = 24.into())),
    ] {
        let dir = with_config(tag, edit);
        let model = Model::load("tiny-gemma2", &dir, BackendKind::Cpu).unwrap();
        let got = model.embed(&texts, &RunOptions::default(), &mut || {}).unwrap();
        let (worst, _) = worst_cosine(&got, &g.embeddings.iter().collect::<Vec<_>>());
        assert!(worst < 0.999, "{tag}: the change made no difference (lowest cosine {worst})");
    }
    let dir = with_config("bidirectional", |c| c["use_bidirectional_attention"] = true.into());
    assert!(matches!(Model::load("tiny-gemma2", &dir, BackendKind::Cpu), Err(bge_engine::Error::Unsupported { .. })));
}

#[test]
fn gemma2_single_prefixed_file_gives_the_same_vectors() {
    // The shards merged into one model.safetensors with "model." before every name (how a
    // *ForCausalLM checkpoint names them): bitwise the same embeddings.
    let src = model_dir("tiny-gemma2");
    let dest = temp_dir("gemma2-prefixed").join("tiny-gemma2");
    copy_dir(&src, &dest);
    let index: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("model.safetensors.index.json")).unwrap()).unwrap();
    let mut shards: Vec<String> = index["weight_map"].as_object().unwrap().values().map(|v| v.as_str().unwrap().to_string()).collect();
    shards.sort();
    shards.dedup();
    let bytes: Vec<Vec<u8>> = shards.iter().map(|s| std::fs::read(src.join(s)).unwrap()).collect();
    let mut tensors = Vec::new();
    for b in &bytes {
        let st = safetensors::SafeTensors::deserialize(b).unwrap();
        for (name, view) in st.tensors() {
            tensors.push((format!("model.{name}"), view));
        }
    }
    for s in &shards {
        std::fs::remove_file(dest.join(s)).unwrap();
    }
    std::fs::remove_file(dest.join("model.safetensors.index.json")).unwrap();
    safetensors::serialize_to_file(tensors, None, &dest.join("model.safetensors")).unwrap();

    let g = goldens("tiny-gemma2");
    let texts: Vec<&str> = g.texts.iter().map(String::as_str).collect();
    let sharded = Model::load("tiny-gemma2", &src, BackendKind::Cpu).unwrap();
    let single = Model::load("tiny-gemma2", &dest, BackendKind::Cpu).unwrap();
    let a = sharded.embed(&texts, &RunOptions::default(), &mut || {}).unwrap();
    let b = single.embed(&texts, &RunOptions::default(), &mut || {}).unwrap();
    assert_eq!(a, b);
}

#[test]
fn gemma2_rows_do_not_depend_on_their_batch() {
    // A row alone and inside batches of every grouping gives bitwise the same vector.
    let model = Model::load("tiny-gemma2", &model_dir("tiny-gemma2"), BackendKind::Cpu).unwrap();
    let g = goldens("tiny-gemma2");
    let texts: Vec<&str> = g.texts.iter().map(String::as_str).collect();
    let all = model.embed(&texts, &RunOptions::default(), &mut || {}).unwrap();
    for (max_batch_tokens, threads) in [(1, 1), (64, 2), (100_000, 3)] {
        let opts = RunOptions { max_batch_tokens, threads, ..RunOptions::default() };
        assert_eq!(model.embed(&texts, &opts, &mut || {}).unwrap(), all, "max_batch_tokens {max_batch_tokens}, {threads} threads");
    }
}

// Mistral (bge-en-icl's architecture) and Qwen3 (Qwen3-Embedding's) are settings of the same
// decoder: SiLU-gated MLP, plain RMSNorm, no sandwich norms or soft-cap; Mistral slides every
// layer, Qwen3 normalises each query and key head. Both files name tensors "model.*".

#[test]
fn mistral_cpu_matches_transformers() {
    let model = Model::load("tiny-mistral", &model_dir("tiny-mistral"), BackendKind::Cpu).unwrap();
    let d = model.spec.decoder.as_ref().unwrap();
    assert_eq!(d.layer_windows, vec![Some(8); 3]);
    assert!(!d.norm_adds_one && !d.sandwich_norms && d.attention_softcap.is_none() && d.embedding_scale.is_none());
    check_model(&model, &goldens("tiny-mistral"), MIN_COSINE);
}

#[test]
fn qwen3_cpu_matches_transformers() {
    let model = Model::load("tiny-qwen3", &model_dir("tiny-qwen3"), BackendKind::Cpu).unwrap();
    let d = model.spec.decoder.as_ref().unwrap();
    assert!(d.qk_norm && d.layer_windows.iter().all(Option::is_none));
    assert_eq!(model.prompt(bge_engine::TextRole::Query), Some("Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"));
    check_model(&model, &goldens("tiny-qwen3"), MIN_COSINE);
}

#[test]
fn mistral_and_qwen3_reference_match_transformers() {
    for name in ["tiny-mistral", "tiny-qwen3"] {
        let model = Model::load(name, &model_dir(name), BackendKind::Reference).unwrap();
        check_model(&model, &goldens(name), MIN_COSINE);
    }
}
