//! BGE-M3's output heads over the encoder's last hidden states, read from
//! sparse_linear.safetensors and colbert_linear.safetensors in the model directory (the
//! published .pt files converted by scripts/models/convert_m3_heads.py):
//! - sparse: Linear(hidden -> 1); a token's lexical weight is relu of it ([`super::sparse`]);
//! - ColBERT: Linear(hidden -> dim); one vector per token after the first ([`super::colbert`]).
//!
//! Both are optional: a directory without them embeds densely as usual, and asking it for
//! sparse or ColBERT output is an [`Error::MissingHead`] naming the file.
use std::path::{Path, PathBuf};

use crate::backend::Ops;
use crate::error::{Error, Result};
use crate::weights::WeightFile;

/// A linear layer over hidden states, on the model's backend.
pub trait Projection: Send + Sync {
    fn out_features(&self) -> usize;
    /// y[rows, out_features] = x[rows, in_features] · Wᵀ + b
    fn apply(&self, pool: &rayon::ThreadPool, x: &[f32], rows: usize) -> Vec<f32>;
}

struct OpsProjection<O: Ops> {
    ops: O,
    linear: O::Linear,
    out_features: usize,
}

impl<O: Ops> Projection for OpsProjection<O> {
    fn out_features(&self) -> usize {
        self.out_features
    }

    fn apply(&self, pool: &rayon::ThreadPool, x: &[f32], rows: usize) -> Vec<f32> {
        let mut y = vec![0.0f32; rows * self.out_features];
        self.ops.linear(pool, x, rows, &self.linear, None, &mut y);
        y
    }
}

/// Which head; its file is `<file_stem>.safetensors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    Sparse,
    Colbert,
}

impl HeadKind {
    pub fn file_stem(self) -> &'static str {
        match self {
            HeadKind::Sparse => "sparse_linear",
            HeadKind::Colbert => "colbert_linear",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            HeadKind::Sparse => "sparse",
            HeadKind::Colbert => "ColBERT",
        }
    }
}

pub struct M3Heads {
    model: String,
    dir: PathBuf,
    sparse: Option<Box<dyn Projection>>,
    colbert: Option<Box<dyn Projection>>,
}

fn load_head<O: Ops>(ops: O, path: &Path, hidden: usize, kind: HeadKind) -> Result<Box<dyn Projection>> {
    let w = WeightFile::open_unprefixed(path)?;
    let out_features = match kind {
        HeadKind::Sparse => 1,
        // colbert_dim is the checkpoint's; BGE-M3's is its hidden size (1024).
        HeadKind::Colbert => w.shape("weight").map(|s| s[0]).filter(|n| *n > 0).unwrap_or(hidden),
    };
    let weight = w.f32("weight", &[out_features, hidden])?;
    let bias = w.f32("bias", &[out_features])?;
    Ok(Box::new(OpsProjection { linear: ops.prepare_linear(weight, bias, out_features, hidden), ops, out_features }))
}

impl M3Heads {
    /// Loads the heads whose files `dir` has; `new_ops` makes an instance of the backend.
    pub fn load<O: Ops>(model: &str, dir: &Path, hidden: usize, new_ops: impl Fn() -> Result<O>) -> Result<M3Heads> {
        let mut heads = M3Heads { model: model.to_string(), dir: dir.to_path_buf(), sparse: None, colbert: None };
        for kind in [HeadKind::Sparse, HeadKind::Colbert] {
            let path = heads.path(kind);
            if !path.exists() {
                continue;
            }
            let head = Some(load_head(new_ops()?, &path, hidden, kind)?);
            match kind {
                HeadKind::Sparse => heads.sparse = head,
                HeadKind::Colbert => heads.colbert = head,
            }
        }
        Ok(heads)
    }

    fn path(&self, kind: HeadKind) -> PathBuf {
        self.dir.join(format!("{}.safetensors", kind.file_stem()))
    }

    /// Which heads are there: (sparse, ColBERT).
    pub fn available(&self) -> (bool, bool) {
        (self.sparse.is_some(), self.colbert.is_some())
    }

    /// The head, or an error naming the file it would be read from.
    pub fn get(&self, kind: HeadKind) -> Result<&dyn Projection> {
        let head = match kind {
            HeadKind::Sparse => &self.sparse,
            HeadKind::Colbert => &self.colbert,
        };
        head.as_deref().ok_or_else(|| Error::MissingHead { model: self.model.clone(), head: kind.describe(), path: self.path(kind) })
    }
}
