//! Per-process model cache: a process (a backend computing in-process, or the model server)
//! loads a model once, on first use, and keeps it for its lifetime. Keyed by bge.model_dir so
//! changing the directory never serves a model from the old one.
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use bge_engine::backend::{cuda, BackendKind};
use bge_engine::{Frontend, Model, ModelStore};

use crate::errors::OrRaise;
use crate::gucs::{self, Device, Precision};
use crate::server::{LoadedCopy, Target};

thread_local! {
    static STORES: RefCell<HashMap<PathBuf, ModelStore>> = RefCell::new(HashMap::new());
}

/// The device a model not loaded yet would run on: bge.device, with `auto` resolved by the GPU
/// probe (run on first use in this backend, then remembered).
pub fn device_name() -> &'static str {
    match gucs::device() {
        Device::Cpu => cpu_kind().name(),
        Device::Cuda => BackendKind::Cuda.name(),
        // Backends never probe CUDA while the model server runs: it says what it found.
        Device::Auto if crate::server::client::active() && crate::server::client::server_has_gpu() => BackendKind::Cuda.name(),
        Device::Auto if crate::server::client::active() => cpu_kind().name(),
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
        Precision::Int8 => "int8",
    };
    (bge_engine::backend::cpu::Isa::selected().ok().map(|i| i.name()), precision)
}

/// The loaded copy of `name` in this backend that bge_embed(text) would use under the current
/// settings, else any loaded copy.
pub fn loaded_copy(store: &ModelStore, name: &str) -> Option<Arc<Model>> {
    preferred_backends().into_iter().find_map(|b| store.loaded_on(name, b)).or_else(|| store.loaded(name)).cloned()
}

/// Of the model server's copies of a model, the one bge_embed(text) would use under the
/// current settings, else any.
pub fn server_copy<'a>(copies: &'a [LoadedCopy], dir: &std::path::Path, name: &str) -> Option<&'a LoadedCopy> {
    let mut of_model = copies.iter().filter(|c| c.dir == dir && c.name == name);
    preferred_backends()
        .into_iter()
        .find_map(|b| of_model.clone().find(|c| c.device == b.name()))
        .or_else(|| of_model.next())
}

/// The backends bge.device and bge.precision would use, best first.
fn preferred_backends() -> Vec<BackendKind> {
    match gucs::device() {
        Device::Cpu => vec![cpu_kind()],
        Device::Cuda => vec![BackendKind::Cuda],
        Device::Auto => vec![BackendKind::Cuda, cpu_kind()],
    }
}

/// The CPU backend bge.precision selects.
fn cpu_kind() -> BackendKind {
    match gucs::precision() {
        Precision::Fp32 => BackendKind::Cpu,
        Precision::Bf16 => BackendKind::CpuBf16,
        Precision::Int8 => BackendKind::CpuInt8,
    }
}

/// Runs `f` on the store of the current bge.model_dir.
pub fn with_store<T>(f: impl FnOnce(&mut ModelStore) -> T) -> T {
    let dir = gucs::model_dir();
    STORES.with(|s| f(s.borrow_mut().entry(dir.clone()).or_insert_with(|| ModelStore::new(dir))))
}

/// The model a call computes with and the copy it wants: a named model runs in fp32 whatever
/// bge.precision says (its SQL forms are IMMUTABLE); None means bge.model with bge.precision.
pub fn target(name: Option<&str>) -> (String, Target) {
    let cpu = if name.is_some() { BackendKind::Cpu } else { cpu_kind() };
    (name.map(str::to_string).unwrap_or_else(gucs::model), Target { device: gucs::device(), cpu })
}

/// The model `name`, loaded on first use on the device bge.device picks: `auto` falls back to
/// the CPU quietly, `cuda` fails when there is no usable GPU. Used in this backend and in the
/// model server alike.
pub fn resolve(store: &mut ModelStore, name: &str, device: Device, cpu: BackendKind) -> bge_engine::Result<Arc<Model>> {
    match device {
        Device::Auto => store.get_auto(name, cpu),
        Device::Cpu => store.get(name, cpu),
        Device::Cuda => {
            // Say there is no GPU before (not after) reading the model's files.
            cuda::device()?;
            store.get(name, BackendKind::Cuda)
        }
    }
}

/// The model `name` (None: bge.model) loaded in this backend (see [`resolve`]).
pub fn model(name: Option<&str>) -> Arc<Model> {
    let (name, target) = target(name);
    model_on(&name, target)
}

/// The copy of model `name` for `target`, loaded in this backend.
pub fn model_on(name: &str, target: Target) -> Arc<Model> {
    require_utf8();
    with_store(|store| resolve(store, name, target.device, target.cpu)).or_raise()
}

/// The spec and tokenizer of `name` (None: bge.model): without loading its weights when the
/// model server computes, else from the model this backend loads.
pub fn frontend(name: Option<&str>) -> Arc<Frontend> {
    let (name, target) = target(name);
    frontend_on(&name, target)
}

/// The spec and tokenizer of the copy of `name` for `target` (see [`frontend`]).
pub fn frontend_on(name: &str, target: Target) -> Arc<Frontend> {
    if !crate::server::client::active() {
        return model_on(name, target).front.clone();
    }
    require_utf8();
    with_store(|store| store.frontend(name)).or_raise()
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
