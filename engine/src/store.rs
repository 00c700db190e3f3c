//! A directory of models (bge.model_dir): each subdirectory holding a config.json is a model,
//! named after the subdirectory. Loaded models are cached for the life of the process.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::BackendKind;
use crate::error::{Error, Result};
use crate::model::{Frontend, Model};

pub struct ModelStore {
    dir: PathBuf,
    /// Loaded models by name and backend (a session may use one model in fp32 and bf16).
    loaded: HashMap<(String, BackendKind), Arc<Model>>,
    /// Tokenizers of models this process only tokenises for (the model server computes).
    fronts: HashMap<String, Arc<Frontend>>,
    /// Models the GPU backend refused (kernels do not cover them): `auto` stops trying.
    gpu_refused: std::collections::HashSet<String>,
}

/// A model name is one path component: no separators, no leading dot (no "..").
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && name.len() <= 200 && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl ModelStore {
    pub fn new(dir: impl Into<PathBuf>) -> ModelStore {
        ModelStore { dir: dir.into(), loaded: HashMap::new(), fronts: HashMap::new(), gpu_refused: Default::default() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Installed model names, sorted.
    pub fn installed(&self) -> Result<Vec<String>> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| Error::ModelDirUnreadable { dir: self.dir.clone(), reason: e.to_string() })?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("config.json").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| valid_name(n))
            .collect();
        names.sort();
        Ok(names)
    }

    pub fn is_loaded(&self, name: &str) -> bool {
        self.loaded(name).is_some()
    }

    /// The copy of `name` loaded for `backend`, if any.
    pub fn loaded_on(&self, name: &str, backend: BackendKind) -> Option<&Arc<Model>> {
        self.loaded.get(&(name.to_string(), backend))
    }

    /// A loaded copy of `name`: on the GPU if there is one, else the fp32 CPU one, else any.
    pub fn loaded(&self, name: &str) -> Option<&Arc<Model>> {
        [BackendKind::Cuda, BackendKind::Cpu, BackendKind::CpuBf16, BackendKind::CpuInt8, BackendKind::Reference]
            .into_iter()
            .find_map(|b| self.loaded.get(&(name.to_string(), b)))
    }

    /// The loaded model `name` on `backend`, unless its weight file changed on disk since (then
    /// it is dropped, and the next load reads the new file).
    fn fresh(&mut self, name: &str, backend: BackendKind) -> Option<Arc<Model>> {
        let key = (name.to_string(), backend);
        let m = self.loaded.get(&key)?;
        if m.is_stale() {
            self.loaded.remove(&key);
            return None;
        }
        Some(m.clone())
    }

    /// The model `name` on the GPU when one works, else on the CPU: what `bge.device = auto`
    /// means. A model already loaded on either is kept. No GPU, no CUDA libraries, or a model
    /// the GPU kernels do not cover all mean the CPU, quietly; the GPU probe runs once per
    /// process and its answer is remembered. Errors in the model itself are still errors.
    /// `cpu` is the CPU flavour to fall back to (fp32, bf16 or int8).
    pub fn get_auto(&mut self, name: &str, cpu: BackendKind) -> Result<Arc<Model>> {
        let gpu = crate::backend::cuda::available() && !self.gpu_refused.contains(name);
        // A CPU copy loaded under bge.device = cpu does not keep `auto` off a working GPU.
        if let Some(m) = self.fresh(name, if gpu { BackendKind::Cuda } else { cpu }) {
            return Ok(m);
        }
        if gpu {
            match self.get(name, BackendKind::Cuda) {
                Err(Error::DeviceUnavailable(_)) => {
                    self.gpu_refused.insert(name.to_string());
                }
                other => return other,
            }
        }
        self.get(name, cpu)
    }

    /// The model `name`, loading it on first use.
    pub fn get(&mut self, name: &str, backend: BackendKind) -> Result<Arc<Model>> {
        if let Some(m) = self.fresh(name, backend) {
            return Ok(m);
        }
        let model = Model::load_shared(name, &self.path_of(name)?, backend)?;
        self.loaded.insert((name.to_string(), backend), model.clone());
        Ok(model)
    }

    /// Drops the copy of `name` loaded for `backend` (the model server evicting one under its
    /// memory budget); its memory is freed once no caller holds it any more, and then given
    /// back to the operating system. Whether there was one.
    pub fn unload(&mut self, name: &str, backend: BackendKind) -> bool {
        let Some(model) = self.loaded.remove(&(name.to_string(), backend)) else { return false };
        let last = Arc::strong_count(&model) == 1;
        drop(model);
        if last {
            Self::trim_heap();
        }
        true
    }

    /// Gives freed heap memory back to the operating system (glibc keeps it otherwise), so
    /// that a dropped model shrinks the process and the next load's growth
    /// ([`Model::resident_bytes`]) measures that copy rather than reused memory.
    pub fn trim_heap() {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only walks the allocator's free lists.
        unsafe {
            libc::malloc_trim(0);
        }
    }

    /// The spec and tokenizer of `name` without its weights, read on first use (again after
    /// the model's files change).
    pub fn frontend(&mut self, name: &str) -> Result<Arc<Frontend>> {
        if let Some(f) = self.fronts.get(name).filter(|f| !f.is_stale()) {
            return Ok(f.clone());
        }
        let front = Arc::new(Frontend::load(name, &self.path_of(name)?)?);
        self.fronts.insert(name.to_string(), front.clone());
        Ok(front)
    }

    /// The directory of model `name`, which must be installed.
    fn path_of(&self, name: &str) -> Result<PathBuf> {
        if !valid_name(name) {
            return Err(Error::InvalidModelName(name.to_string()));
        }
        let path = self.dir.join(name);
        if !path.join("config.json").is_file() {
            let installed = self.installed().unwrap_or_default();
            return Err(Error::UnknownModel { name: name.to_string(), dir: self.dir.clone(), installed });
        }
        Ok(path)
    }
}

