//! model.safetensors, memory-mapped. Matrices are converted to f32 once at load (backends then
//! repack them); the word-embedding table, the largest tensor, stays in the mapping and is read
//! row by row, so backends share it through the page cache.
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata, TensorInfo};
use safetensors::SafeTensors;

use crate::error::{invalid_file, Error, Result};

pub struct WeightFile {
    path: PathBuf,
    mmap: Arc<Mmap>,
    data_start: usize,
    meta: Metadata,
    /// "bert.", "roberta." or "" depending on how the model was saved.
    prefix: String,
}

const ANCHOR: &str = "embeddings.word_embeddings.weight";

impl WeightFile {
    /// An encoder's weights; tensor names may carry a prefix ("bert.", "roberta.", …), found
    /// from the word-embedding table's name.
    pub fn open(path: &Path) -> Result<WeightFile> {
        let mut file = Self::open_unprefixed(path)?;
        file.prefix = file
            .meta
            .offset_keys()
            .into_iter()
            .find_map(|k| k.strip_suffix(ANCHOR).map(str::to_string))
            .ok_or_else(|| Error::MissingTensor { path: path.to_path_buf(), tensor: ANCHOR.into() })?;
        Ok(file)
    }

    /// A file whose tensors are named exactly as asked for (e.g. an output head's "weight").
    pub fn open_unprefixed(path: &Path) -> Result<WeightFile> {
        let file = File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::MissingFile { path: path.to_path_buf() },
            _ => invalid_file(path, e),
        })?;
        // SAFETY: the mapping is read-only; model files are not rewritten in place while served.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| invalid_file(path, e))?;
        let (header_len, meta) = SafeTensors::read_metadata(&mmap).map_err(|e| invalid_file(path, format!("not a complete safetensors file ({e})")))?;
        Ok(WeightFile { path: path.to_path_buf(), mmap: Arc::new(mmap), data_start: 8 + header_len, meta, prefix: String::new() })
    }

    /// The shape of tensor `name` (without the prefix), if the file has it.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.meta.info(&format!("{}{}", self.prefix, name)).map(|i| i.shape.as_slice())
    }

    fn info(&self, name: &str, shape: &[usize]) -> Result<&TensorInfo> {
        let full = format!("{}{}", self.prefix, name);
        let info = self.meta.info(&full).ok_or_else(|| Error::MissingTensor { path: self.path.clone(), tensor: full.clone() })?;
        if info.shape != shape {
            return Err(Error::TensorShape { path: self.path.clone(), tensor: full, found: info.shape.clone(), expected: shape.to_vec() });
        }
        if !matches!(info.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            return Err(invalid_file(&self.path, format!("tensor \"{full}\" has dtype {:?}; F32, F16 or BF16 expected", info.dtype)));
        }
        Ok(info)
    }

    fn bytes(&self, info: &TensorInfo) -> &[u8] {
        &self.mmap[self.data_start + info.data_offsets.0..self.data_start + info.data_offsets.1]
    }

    /// The tensor `name` (without the file's prefix), checked against `shape`, as f32.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let info = self.info(name, shape)?;
        let mut out = vec![0.0; shape.iter().product()];
        convert(info.dtype, self.bytes(info), &mut out);
        Ok(out)
    }

    /// A [rows, cols] tensor that stays in the mapping and is read one row at a time.
    pub fn table(&self, name: &str, rows: usize, cols: usize) -> Result<EmbeddingTable> {
        let info = self.info(name, &[rows, cols])?;
        Ok(EmbeddingTable { mmap: self.mmap.clone(), offset: self.data_start + info.data_offsets.0, dtype: info.dtype, rows, cols })
    }
}

fn convert(dtype: Dtype, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        Dtype::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        Dtype::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        Dtype::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        other => unreachable!("dtype {other:?} rejected in WeightFile::info"),
    }
}

pub struct EmbeddingTable {
    mmap: Arc<Mmap>,
    offset: usize,
    dtype: Dtype,
    pub rows: usize,
    pub cols: usize,
}

impl EmbeddingTable {
    /// Copies row `i` (as f32) into `out`; callers bound-check ids against `rows` beforehand.
    pub fn row(&self, i: usize, out: &mut [f32]) {
        let width = self.dtype.bitsize() / 8;
        let start = self.offset + i * self.cols * width;
        convert(self.dtype, &self.mmap[start..start + self.cols * width], out);
    }
}
