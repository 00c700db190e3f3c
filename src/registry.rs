//! Per-backend model cache: each PostgreSQL backend loads a model once, on first use (weights
//! memory-mapped), and keeps it for its lifetime. Keyed by bge.model_dir so changing the
//! directory never serves a model from the old one.
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use bge_engine::backend::BackendKind;
use bge_engine::{Model, ModelStore};
use pgrx::PgSqlErrorCode;

use crate::errors::{raise_with, OrRaise};
use crate::gucs::{self, Device};

thread_local! {
    static STORES: RefCell<HashMap<PathBuf, ModelStore>> = RefCell::new(HashMap::new());
}

/// The backend bge.device selects. This build has the CPU backend only.
pub fn backend_kind() -> BackendKind {
    match gucs::device() {
        Device::Auto | Device::Cpu => BackendKind::Cpu,
        Device::Cuda => raise_with(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "bge.device = cuda is not available: this build of pg_bge has no CUDA backend".into(),
            "SET bge.device = auto (or cpu) to embed on the CPU.",
        ),
    }
}

pub fn device_name() -> &'static str {
    "cpu"
}

/// Runs `f` on the store of the current bge.model_dir.
pub fn with_store<T>(f: impl FnOnce(&mut ModelStore) -> T) -> T {
    let dir = gucs::model_dir();
    STORES.with(|s| f(s.borrow_mut().entry(dir.clone()).or_insert_with(|| ModelStore::new(dir))))
}

/// The model `name` (bge.model when None), loaded on first use.
pub fn model(name: Option<&str>) -> Arc<Model> {
    let name = name.map(str::to_string).unwrap_or_else(gucs::model);
    let backend = backend_kind();
    with_store(|store| store.get(&name, backend)).or_raise()
}
