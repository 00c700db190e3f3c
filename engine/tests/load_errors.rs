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
    assert!(matches!(e, Error::InvalidFile { .. }) && e.kind() == ErrorKind::ModelFileCorrupt, "{e}");

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
