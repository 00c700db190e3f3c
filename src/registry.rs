//! Per-process model cache: a process (a backend computing in-process, or the model server)
//! loads a model once, on first use, and keeps it for its lifetime. Keyed by bge.model_dir so
//! changing the directory never serves a model from the old one.
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bge_engine::backend::{cuda, BackendKind, Precision};
use bge_engine::{Frontend, Model, ModelStore};

use crate::compute::Call;
use crate::gucs::{self, Device};
use crate::server::{LoadedCopy, Target};

thread_local! {
    static STORES: RefCell<HashMap<PathBuf, ModelStore>> = RefCell::new(HashMap::new());
}

/// The device a model not loaded yet would run on under the session's settings: bge.device,
/// with `auto` resolved by the GPU probe (run on first use in this backend, then remembered).
pub fn device_name() -> &'static str {
    let target = session_target();
    let gpu_here = || {
        // Backends never probe CUDA while the model server runs: it says what it found.
        if crate::server::client::active() {
            crate::server::client::server_has_gpu()
        } else {
            cuda::available()
        }
    };
    match backends(target).as_slice() {
        [BackendKind::Cuda, cpu] if !gpu_here() => cpu.name(),
        [first, ..] => first.name(),
        [] => unreachable!("every target has a backend"),
    }
}

/// The CPU kernel family and linear-layer precision a model not loaded yet would run with
/// (None for the kernel family on a GPU, or where BGE_CPU_ISA names one this CPU lacks).
pub fn planned_compute() -> (Option<&'static str>, &'static str) {
    if device_name() == BackendKind::Cuda.name() {
        return (None, bge_engine::backend::cuda::PRECISION);
    }
    (bge_engine::backend::cpu::Isa::selected().ok().map(|i| i.name()), gucs::precision().name())
}

/// The loaded copy of `name` in this backend that bge_embed(text) would use under the current
/// settings, else any loaded copy.
pub fn loaded_copy(store: &ModelStore, name: &str) -> Option<Arc<Model>> {
    backends(session_target()).into_iter().find_map(|b| store.loaded_on(name, b)).or_else(|| store.loaded(name)).cloned()
}

/// Of the model server's copies of a model, the one bge_embed(text) would use under the
/// current settings, else any.
pub fn server_copy<'a>(copies: &'a [LoadedCopy], dir: &Path, name: &str) -> Option<&'a LoadedCopy> {
    let mut of_model = copies.iter().filter(|c| c.dir == dir && c.name == name);
    backends(session_target())
        .into_iter()
        .find_map(|b| of_model.clone().find(|c| c.device == b.name()))
        .or_else(|| of_model.next())
}

/// The copy bge_embed(text) asks for: bge.device with bge.precision.
pub fn session_target() -> Target {
    Target { device: gucs::device(), precision: gucs::precision() }
}

/// The backends a copy for `target` may run on, best first. The GPU computes in fp16
/// (cuda::PRECISION): under `auto` it serves fp32 requests and bf16 or int8 run on the CPU as
/// asked; `cuda` with bf16 or int8 is refused by [`resolve`].
pub fn backends(target: Target) -> Vec<BackendKind> {
    let cpu = BackendKind::cpu(target.precision);
    match target.device {
        Device::Cpu => vec![cpu],
        Device::Cuda => vec![BackendKind::Cuda],
        Device::Auto if target.precision == Precision::Fp32 => vec![BackendKind::Cuda, cpu],
        Device::Auto => vec![cpu],
    }
}

/// Runs `f` on the store of model directory `dir` in this process.
pub fn with_store<T>(dir: &Path, f: impl FnOnce(&mut ModelStore) -> T) -> T {
    STORES.with(|s| f(s.borrow_mut().entry(dir.to_path_buf()).or_insert_with(|| ModelStore::new(dir.to_path_buf()))))
}

/// The copy of model `name` for `target`, loaded on first use: `auto` falls back to the CPU
/// quietly, `cuda` fails when there is no usable GPU or the precision is not the GPU's. Used in
/// this backend and in the model server alike.
pub fn resolve(store: &mut ModelStore, name: &str, target: Target) -> bge_engine::Result<Arc<Model>> {
    match backends(target).as_slice() {
        [BackendKind::Cuda, cpu] => store.get_auto(name, *cpu),
        [BackendKind::Cuda] => {
            if target.precision != Precision::Fp32 {
                return Err(bge_engine::Error::UnsupportedSetting {
                    reason: format!("bge.precision = {} runs on the CPU only; the GPU computes in {}", target.precision.name(), cuda::PRECISION),
                    hint: "Set bge.device = auto or cpu for this precision, or bge.precision = fp32 on the GPU.".into(),
                });
            }
            // Say there is no GPU before (not after) reading the model's files.
            cuda::device()?;
            store.get(name, BackendKind::Cuda)
        }
        [cpu] => store.get(name, *cpu),
        _ => unreachable!("backends() gives one CPU backend at most, after the GPU"),
    }
}

/// The copy of `call`'s model it computes with, loaded in this backend.
pub fn model(call: &Call) -> bge_engine::Result<Arc<Model>> {
    require_utf8();
    with_store(&call.dir, |store| resolve(store, &call.model, call.target))
}

/// The spec and tokenizer of `call`'s model: without loading its weights when the model
/// server computes, else from the model this backend loads.
pub fn frontend(call: &Call) -> bge_engine::Result<Arc<Frontend>> {
    if !call.on_server {
        return Ok(model(call)?.front.clone());
    }
    require_utf8();
    with_store(&call.dir, |store| store.frontend(&call.model))
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
