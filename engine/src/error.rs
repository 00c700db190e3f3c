//! Engine errors. Each variant carries what a user needs to fix the problem; `pg_bge` maps the
//! [`ErrorKind`] to a SQLSTATE and turns `hint()` into the ERROR's HINT.
use std::path::PathBuf;

use crate::config::ModelKind;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("model \"{name}\" is not installed in \"{dir}\"")]
    UnknownModel { name: String, dir: PathBuf, installed: Vec<String> },

    #[error("invalid model name \"{0}\"")]
    InvalidModelName(String),

    #[error("model directory \"{dir}\" cannot be read: {reason}")]
    ModelDirUnreadable { dir: PathBuf, reason: String },

    #[error("model file \"{path}\" is missing")]
    MissingFile { path: PathBuf },

    #[error("model file \"{path}\" is invalid: {reason}")]
    InvalidFile { path: PathBuf, reason: String },

    #[error("tensor \"{tensor}\" in \"{path}\" has shape {found:?}, expected {expected:?}")]
    TensorShape { path: PathBuf, tensor: String, found: Vec<usize>, expected: Vec<usize> },

    #[error("tensor \"{tensor}\" is missing from \"{path}\"")]
    MissingTensor { path: PathBuf, tensor: String },

    #[error("model \"{model}\" has no {head} head: \"{path}\" is missing")]
    MissingHead { model: String, head: &'static str, path: PathBuf },

    #[error("model \"{model}\" is not supported: {reason}")]
    Unsupported { model: String, reason: String },

    /// A reranker asked for embeddings, or an embedder for scores.
    #[error("model \"{model}\" is {}, not {}", is.with_article(), needs.with_article())]
    WrongModelKind { model: String, is: ModelKind, needs: ModelKind },

    /// A combination of settings this build cannot honour (e.g. a precision the GPU lacks).
    #[error("{reason}")]
    UnsupportedSetting { reason: String, hint: String },

    /// The CPU (or the kernel family forced by BGE_CPU_ISA) lacks an instruction set.
    #[error("{reason}")]
    CpuFeatureMissing { reason: String, hint: String },

    #[error("input has {tokens} tokens, more than the {limit} that model \"{model}\" accepts")]
    InputTooLong { model: String, tokens: usize, limit: usize },

    #[error("tokenizer failed: {0}")]
    Tokenizer(String),

    #[error("{0}")]
    InvalidArgument(String),

    /// No usable GPU for the CUDA backend: no driver, no GPU, no NVRTC or cuBLAS, or a model
    /// the kernels do not cover. `bge.device = auto` falls back to the CPU on this error.
    #[error("CUDA is not available: {0}")]
    DeviceUnavailable(String),

    /// A buffer could not be allocated: an ERROR instead of the abort a failed Rust
    /// allocation would be.
    #[error("out of memory: pg_bge could not allocate {bytes} bytes")]
    OutOfMemory { bytes: usize },

    /// A model file changed on disk after this process loaded it.
    #[error("model file \"{path}\" changed on disk after it was loaded")]
    ModelFileChanged { path: PathBuf },

    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn out_of_memory(bytes: usize) -> Error {
        Error::OutOfMemory { bytes }
    }
}

/// A buffer of `len` default values, or [`Error::OutOfMemory`] where the allocation fails.
pub fn try_zeroed<T: Clone + Default>(len: usize) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| Error::out_of_memory(len.saturating_mul(std::mem::size_of::<T>())))?;
    v.resize(len, T::default());
    Ok(v)
}

/// Coarse classes of errors, one SQLSTATE each on the PostgreSQL side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The named model does not exist (undefined_object).
    UndefinedModel,
    /// A name or argument is malformed (invalid_parameter_value).
    InvalidParameter,
    /// A model file or the model directory is missing or unreadable (undefined_file).
    ModelFileMissing,
    /// A model file is there but malformed: truncated, wrong shapes (data_corrupted).
    ModelFileCorrupt,
    /// The model's architecture or options are outside what the engine implements.
    FeatureNotSupported,
    /// Input longer than the model accepts with truncation off (program_limit_exceeded).
    InputTooLong,
    /// The CUDA backend cannot run here (feature_not_supported, as a build without it was).
    DeviceUnavailable,
    /// An allocation failed (out_of_memory).
    OutOfMemory,
    /// Anything else (internal_error).
    Internal,
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::UnknownModel { .. } => ErrorKind::UndefinedModel,
            Error::InvalidModelName(_) | Error::InvalidArgument(_) | Error::WrongModelKind { .. } => ErrorKind::InvalidParameter,
            Error::ModelDirUnreadable { .. } | Error::MissingFile { .. } | Error::MissingHead { .. } => ErrorKind::ModelFileMissing,
            Error::InvalidFile { .. } | Error::TensorShape { .. } | Error::MissingTensor { .. } | Error::ModelFileChanged { .. } => {
                ErrorKind::ModelFileCorrupt
            }
            Error::OutOfMemory { .. } => ErrorKind::OutOfMemory,
            Error::Unsupported { .. } | Error::UnsupportedSetting { .. } | Error::CpuFeatureMissing { .. } => ErrorKind::FeatureNotSupported,
            Error::InputTooLong { .. } => ErrorKind::InputTooLong,
            Error::DeviceUnavailable(_) => ErrorKind::DeviceUnavailable,
            Error::Tokenizer(_) | Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// What the user can do about it, phrased as a PostgreSQL HINT.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::UnknownModel { installed, dir, .. } => {
                let list = if installed.is_empty() {
                    "no models are installed".to_string()
                } else {
                    format!("installed models: {}", installed.join(", "))
                };
                Some(format!(
                    "{list}. Fetch one into \"{}\" with scripts/models/fetch.sh, or point bge.model_dir at a directory of models.",
                    dir.display()
                ))
            }
            Error::InvalidModelName(_) => Some(
                "A model name is the name of a directory under bge.model_dir: letters, digits, '.', '_' and '-', not starting with '.'."
                    .into(),
            ),
            Error::ModelDirUnreadable { .. } => {
                Some("Check bge.model_dir and that the server's operating-system user can read it.".into())
            }
            Error::MissingFile { .. } | Error::InvalidFile { .. } | Error::TensorShape { .. } | Error::MissingTensor { .. } => Some(
                "The model directory must be a complete sentence-transformers export; fetch it again with scripts/models/fetch.sh.".into(),
            ),
            Error::MissingHead { path, .. } => {
                let pt = path.with_extension("pt");
                let dir = path.parent().map(|d| d.display().to_string()).unwrap_or_default();
                Some(if pt.exists() {
                    format!(
                        "pg_bge reads safetensors only: convert {} with `python3 scripts/models/convert_m3_heads.py \"{dir}\"` (needs torch and safetensors).",
                        pt.file_name().unwrap_or_default().to_string_lossy()
                    )
                } else {
                    "Sparse and ColBERT output need BGE-M3's sparse_linear and colbert_linear heads; scripts/models/fetch.sh DIR bge-m3 fetches and converts them.".into()
                })
            }
            Error::InputTooLong { .. } => {
                Some("Shorten the input, or SET bge.truncate = on to embed only its first tokens as sentence-transformers does.".into())
            }
            Error::Unsupported { .. } => {
                Some("pg_bge runs BERT and XLM-RoBERTa encoders (BertModel, XLMRobertaModel), their rerankers (BertForSequenceClassification, XLMRobertaForSequenceClassification with one label) and Gemma2, Mistral and Qwen3 decoder embedders (Gemma2Model, MistralModel, Qwen3Model) exported for sentence-transformers.".into())
            }
            Error::WrongModelKind { is, .. } => Some(if *is == ModelKind::Reranker {
                "A reranker scores (query, passage) pairs: bge_rerank(query, passage, model). Embeddings come from an embedder; the kind column of bge_models() tells them apart.".into()
            } else {
                "bge_rerank needs a cross-encoder (…ForSequenceClassification with one label, e.g. bge-reranker-base); the kind column of bge_models() tells them apart.".into()
            }),
            Error::CpuFeatureMissing { hint, .. } | Error::UnsupportedSetting { hint, .. } => Some(hint.clone()),
            Error::OutOfMemory { .. } => Some(
                "Embed fewer or shorter texts per call, or lower bge.max_batch_tokens; check the server's memory limits.".into(),
            ),
            Error::ModelFileChanged { .. } => Some(
                "Replace model files by writing a new file and renaming it over the old one, never in place; the next call loads the new file.".into(),
            ),
            Error::DeviceUnavailable(_) => Some(
                "SET bge.device = auto (or cpu) to embed on the CPU. The CUDA backend needs an NVIDIA GPU of compute capability 8.0 (Ampere) or newer with its driver (libcuda.so.1), and NVRTC (libnvrtc.so) and cuBLAS (libcublas.so) on the server's library path, in $CUDA_HOME/lib64 or /usr/local/cuda/lib64, or in $BGE_CUDA_LIB_DIR."
                    .into(),
            ),
            _ => None,
        }
    }
}

pub(crate) fn invalid_file(path: &std::path::Path, reason: impl ToString) -> Error {
    Error::InvalidFile { path: path.to_path_buf(), reason: reason.to_string() }
}
