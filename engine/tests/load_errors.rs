//! Broken model directories give the right error, never a panic.
mod common;

use std::path::Path;

use bge_engine::backend::BackendKind;
use bge_engine::error::ErrorKind;
use bge_engine::{Error, Model, ModelStore};
use common::*;

/// A copy of the model with every file symlinked except `skip`.
fn linked_copy(dest: &Path, skip: &[&str]) {
    let src = minilm();
    std::fs::create_dir_all(dest.join("1_Pooling")).unwrap();
    for rel in ["config.json", "tokenizer.json", "model.safetensors", "modules.json", "sentence_bert_config.json", "1_Pooling/config.json"] {
        if !skip.contains(&rel) {
            std::os::unix::fs::symlink(src.join(rel), dest.join(rel)).unwrap();
        }
    }
}

fn load(dir: &Path) -> Error {
    match Model::load("test", dir, BackendKind::Cpu) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e,
    }
}

#[test]
fn broken_directories_are_errors() {
    let root = temp_dir("broken");
    let weights = std::fs::read(minilm().join("model.safetensors")).unwrap();

    let d = root.join("truncated");
    linked_copy(&d, &["model.safetensors"]);
    std::fs::write(d.join("model.safetensors"), &weights[..weights.len() / 2]).unwrap();
    let e = load(&d);
    assert!(matches!(e, Error::InvalidFile { .. }) && e.kind() == ErrorKind::ModelFileCorrupt && e.to_string().contains("not a complete safetensors file"), "{e}");

    let d = root.join("shapes");
    linked_copy(&d, &["model.safetensors"]);
    let n = u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&weights[8..8 + n]).unwrap();
    // [1536, 384] -> [384, 1536]: same byte size, so only the shape check can catch it.
    let bad = header.replacen("\"shape\":[1536,384]", "\"shape\":[384,1536]", 1);
    assert_ne!(bad, header);
    let mut file = weights[..8].to_vec();
    file.extend_from_slice(bad.as_bytes());
    file.extend_from_slice(&weights[8 + n..]);
    std::fs::write(d.join("model.safetensors"), file).unwrap();
    let e = load(&d);
    assert!(matches!(&e, Error::TensorShape { found, .. } if found == &vec![384, 1536]), "{e}");

    let d = root.join("no-tokenizer");
    linked_copy(&d, &["tokenizer.json"]);
    let e = load(&d);
    assert!(matches!(&e, Error::MissingFile { path } if path.ends_with("tokenizer.json")) && e.kind() == ErrorKind::ModelFileMissing, "{e}");

    let d = root.join("no-weights");
    linked_copy(&d, &["model.safetensors"]);
    assert!(matches!(load(&d), Error::MissingFile { .. }));

    let d = root.join("bad-config");
    linked_copy(&d, &["config.json"]);
    std::fs::write(d.join("config.json"), "{\"model_type\": ").unwrap();
    assert!(matches!(load(&d), Error::InvalidFile { .. }));

    let d = root.join("bad-tokenizer");
    linked_copy(&d, &["tokenizer.json"]);
    std::fs::write(d.join("tokenizer.json"), "not json").unwrap();
    assert!(matches!(load(&d), Error::InvalidFile { .. }));
}

#[test]
fn store_names_and_unknown_models() {
    let root = temp_dir("store");
    linked_copy(&root.join("good-model"), &[]);
    let mut store = ModelStore::new(&root);
    assert_eq!(store.installed().unwrap(), vec!["good-model".to_string()]);
    for bad in ["", "..", "../etc", "a/b", ".hidden"] {
        assert!(matches!(store.get(bad, BackendKind::Cpu), Err(Error::InvalidModelName(_))), "{bad:?}");
    }
    match store.get("missing", BackendKind::Cpu) {
        Err(e @ Error::UnknownModel { .. }) => assert!(e.hint().unwrap().contains("good-model"), "{:?}", e.hint()),
        other => panic!("{:?}", other.err()),
    }
    assert!(store.get("good-model", BackendKind::Cpu).is_ok());
    assert!(store.is_loaded("good-model"));
    assert!(matches!(ModelStore::new("/nonexistent/dir").installed(), Err(Error::ModelDirUnreadable { .. })));
}

#[test]
fn configs_outside_sane_bounds_are_refused_before_any_allocation() {
    let root = temp_dir("bounds");
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(minilm().join("config.json")).unwrap()).unwrap();
    for (name, edits) in [
        ("layers", vec![("num_hidden_layers", 1_000_000_000_000u64)]),
        ("zero-layers", vec![("num_hidden_layers", 0), ("intermediate_size", 1 << 40)]),
        ("vocab", vec![("vocab_size", 1 << 40)]),
        ("positions", vec![("max_position_embeddings", u64::MAX)]),
    ] {
        let d = root.join(name);
        linked_copy(&d, &["config.json"]);
        let mut c = config.clone();
        for (k, v) in edits {
            c[k] = v.into();
        }
        std::fs::write(d.join("config.json"), c.to_string()).unwrap();
        let e = load(&d);
        assert!(matches!(e, Error::InvalidFile { .. }) && e.to_string().contains("is outside 1..="), "{name}: {e}");
    }
}

#[test]
fn modules_json_cannot_point_outside_the_model_directory() {
    let root = temp_dir("modules-escape");
    for bad in ["../../etc", "/etc", "1_Pooling/../../x"] {
        let d = root.join(bad.replace('/', "_"));
        linked_copy(&d, &["modules.json"]);
        let modules = format!(
            r#"[{{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"}},{{"idx":1,"name":"1","path":"{bad}","type":"sentence_transformers.models.Pooling"}}]"#
        );
        std::fs::write(d.join("modules.json"), modules).unwrap();
        let e = load(&d);
        assert!(e.to_string().contains("leaves the model directory"), "{bad}: {e}");
    }
}

#[test]
fn model_files_changed_under_a_loaded_model_are_errors_never_sigbus() {
    let root = temp_dir("replaced");
    let d = root.join("m");
    linked_copy(&d, &["model.safetensors"]);
    let weights = d.join("model.safetensors");
    std::fs::copy(minilm().join("model.safetensors"), &weights).unwrap();
    let opts = bge_engine::RunOptions::default();
    let mut store = ModelStore::new(&root);
    let model = store.get("m", BackendKind::Cpu).unwrap();
    let before = model.embed(&["a text"], &opts, &mut || {}).unwrap();

    // Replaced by rename: the loaded model keeps reading the old file; the store loads the new.
    let tmp = d.join("model.safetensors.new");
    std::fs::copy(minilm().join("model.safetensors"), &tmp).unwrap();
    std::fs::rename(&tmp, &weights).unwrap();
    assert_eq!(model.embed(&["a text"], &opts, &mut || {}).unwrap(), before);
    let reloaded = store.get("m", BackendKind::Cpu).unwrap();
    assert!(!std::sync::Arc::ptr_eq(&model, &reloaded), "a replaced file is reloaded");
    assert_eq!(reloaded.embed(&["a text"], &opts, &mut || {}).unwrap(), before);

    // Truncated in place under the loaded model: an error, not SIGBUS.
    let file = std::fs::OpenOptions::new().write(true).open(&weights).unwrap();
    file.set_len(1000).unwrap();
    let e = reloaded.embed(&["a text"], &opts, &mut || {}).unwrap_err();
    assert!(matches!(e, Error::ModelFileChanged { .. }) && e.kind() == ErrorKind::ModelFileCorrupt, "{e}");
    assert!(e.hint().unwrap().contains("renaming"), "{:?}", e.hint());
    // ... and the store now reports the broken file.
    assert!(matches!(store.get("m", BackendKind::Cpu), Err(Error::InvalidFile { .. })));
}
