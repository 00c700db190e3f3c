//! Per-backend model cache: each PostgreSQL backend loads a model once, on first use (weights
//! memory-mapped), and keeps it for its lifetime. Keyed by bge.model_dir so changing the
//! directory never serves a model from the old one.
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use bge_engine::backend::{cuda, BackendKind};
use bge_engine::{Model, ModelStore};

use crate::errors::OrRaise;
use crate::gucs::{self, Device, Precision};

thread_local! {
    static STORES: RefCell<HashMap<PathBuf, ModelStore>> = RefCell::new(HashMap::new());
}

/// The device a model not loaded yet would run on: bge.device, with `auto` resolved by the GPU
/// probe (run on first use in this backend, then remembered).
pub fn device_name() -> &'static str {
    match gucs::device() {
        Device::Cpu => cpu_kind().name(),
        Device::Cuda => BackendKind::Cuda.name(),
        Device::Auto if cuda::available() => BackendKind::Cuda.name(),
        Device::Auto => cpu_kind().name(),
    }
}

/// The CPU kernel family and linear-layer precision a model not loaded yet would run with
/// (None for the kernel family on a GPU, or where BGE_CPU_ISA names one this CPU lacks).
pub fn planned_compute() -> (Option<&'static str>, &'static str) {
    if device_name() == BackendKind::Cuda.name() {
        return (None, "fp16");
    }
    let precision = match gucs::precision() {
        Precision::Fp32 => "fp32",
        Precision::Bf16 => "bf16",
    };
    (bge_engine::backend::cpu::Isa::selected().ok().map(|i| i.name()), precision)
}

/// The loaded copy of `name` that bge_embed(text) would use under the current settings, else
/// any loaded copy.
pub fn loaded_copy(store: &ModelStore, name: &str) -> Option<Arc<Model>> {
    let preferred = match gucs::device() {
        Device::Cpu => vec![cpu_kind()],
        Device::Cuda => vec![BackendKind::Cuda],
        Device::Auto => vec![BackendKind::Cuda, cpu_kind()],
    };
    preferred.into_iter().find_map(|b| store.loaded_on(name, b)).or_else(|| store.loaded(name)).cloned()
}

/// The CPU backend bge.precision selects.
fn cpu_kind() -> BackendKind {
    match gucs::precision() {
        Precision::Fp32 => BackendKind::Cpu,
        Precision::Bf16 => BackendKind::CpuBf16,
    }
}

/// Runs `f` on the store of the current bge.model_dir.
pub fn with_store<T>(f: impl FnOnce(&mut ModelStore) -> T) -> T {
    let dir = gucs::model_dir();
    STORES.with(|s| f(s.borrow_mut().entry(dir.clone()).or_insert_with(|| ModelStore::new(dir))))
}

/// The model `name`, loaded on first use on the device bge.device picks: `auto` falls back to
/// the CPU quietly, `cuda` raises an ERROR when there is no usable GPU. A named model runs in
/// fp32 whatever bge.precision says (its SQL forms are IMMUTABLE); None means bge.model with
/// bge.precision.
pub fn model(name: Option<&str>) -> Arc<Model> {
    require_utf8();
    let cpu = if name.is_some() { BackendKind::Cpu } else { cpu_kind() };
    let name = name.map(str::to_string).unwrap_or_else(gucs::model);
    match gucs::device() {
        Device::Auto => with_store(|store| store.get_auto(&name, cpu)),
        Device::Cpu => with_store(|store| store.get(&name, cpu)),
        Device::Cuda => {
            // Say there is no GPU before (not after) reading the model's files.
            cuda::device().or_raise();
            with_store(|store| store.get(&name, BackendKind::Cuda))
        }
    }
    .or_raise()
}

/// Tokenizers work on UTF-8; text from a database in another encoding would be misread.
fn require_utf8() {
    // SAFETY: plain reads of the backend's database encoding.
    let encoding = unsafe { pgrx::pg_sys::GetDatabaseEncoding() };
    if encoding != pgrx::pg_sys::pg_enc::PG_UTF8 as i32 {
        let name = unsafe { std::ffi::CStr::from_ptr(pgrx::pg_sys::GetDatabaseEncodingName()) }.to_string_lossy().into_owned();
        crate::errors::raise_with(
            pgrx::PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("pg_bge needs a UTF8 database; this one is {name}"),
            "Create the database WITH ENCODING 'UTF8' (and a UTF-8 locale or TEMPLATE template0).",
        );
    }
}
