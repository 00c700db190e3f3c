//! model.safetensors (or the shards of model.safetensors.index.json), read with positioned reads (never memory-mapped: a file truncated or
//! rewritten under a mapping would kill the process with SIGBUS). Matrices are converted to f32
//! once at load (backends then repack them); the word-embedding table, the largest tensor,
//! stays in the file and is read row by row per call, so processes share it through the page
//! cache. Every read checks the file is still the one loaded ([`FileIdentity`]): a model file
//! replaced in place is an ERROR, one replaced by rename keeps serving the old contents.
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use safetensors::tensor::{Dtype, Metadata, TensorInfo};

use crate::error::{invalid_file, try_zeroed, Error, Result};

/// What identifies a file's contents cheaply: size and modification time of the open file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    len: u64,
    mtime: (i64, i64),
}

impl FileIdentity {
    pub fn of(meta: &std::fs::Metadata) -> FileIdentity {
        FileIdentity { len: meta.len(), mtime: (meta.mtime(), meta.mtime_nsec()) }
    }
}

/// An open weight file and the identity it had when opened.
struct OpenFile {
    path: PathBuf,
    file: File,
    identity: FileIdentity,
}

impl OpenFile {
    /// An error when the file's size or modification time changed since it was opened.
    fn check(&self) -> Result<()> {
        let now = self.file.metadata().map_err(|e| invalid_file(&self.path, e))?;
        if FileIdentity::of(&now) != self.identity {
            return Err(Error::ModelFileChanged { path: self.path.clone() });
        }
        Ok(())
    }

    /// `buf.len()` bytes at `offset`; a short file is an error.
    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.file.read_exact_at(buf, offset as u64).map_err(|e| invalid_file(&self.path, format!("cannot read {} bytes at offset {offset}: {e}", buf.len())))
    }
}

/// One safetensors file of a model: its header and where its data starts.
struct Shard {
    file: Arc<OpenFile>,
    data_start: usize,
    meta: Metadata,
}

/// A model's weights: one model.safetensors, or the shards a model.safetensors.index.json lists
/// (how large models are published: model-00001-of-00004.safetensors, …).
pub struct WeightFile {
    shards: Vec<Shard>,
    /// The path opened (the single file or the index) and what it was then.
    path: PathBuf,
    identity: FileIdentity,
    /// "bert.", "roberta.", "model." or "" depending on how the model was saved.
    prefix: String,
}

const ANCHOR: &str = "embeddings.word_embeddings.weight";
/// Largest safetensors header read (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100 << 20;

/// model.safetensors.index.json: tensor name -> shard file name.
#[derive(serde::Deserialize)]
struct ShardIndex {
    weight_map: std::collections::BTreeMap<String, String>,
}

impl WeightFile {
    /// An encoder's weights; tensor names may carry a prefix ("bert.", "roberta.", …), found
    /// from the word-embedding table's name.
    pub fn open(path: &Path) -> Result<WeightFile> {
        Self::open_anchored(path, ANCHOR)
    }

    /// Weights whose tensor names may carry a prefix, found from the name of tensor `anchor`
    /// (e.g. "embed_tokens.weight" for a decoder saved as "model.embed_tokens.weight"). `path`
    /// is a safetensors file or a model.safetensors.index.json naming the shards.
    pub fn open_anchored(path: &Path, anchor: &str) -> Result<WeightFile> {
        let mut file = if path.extension().is_some_and(|e| e == "json") { Self::open_sharded(path)? } else { Self::open_unprefixed(path)? };
        file.prefix = file
            .shards
            .iter()
            .flat_map(|s| s.meta.offset_keys())
            .find_map(|k| k.strip_suffix(anchor).map(str::to_string))
            .ok_or_else(|| Error::MissingTensor { path: path.to_path_buf(), tensor: anchor.into() })?;
        Ok(file)
    }

    /// The shards listed by a model.safetensors.index.json, each opened once. A shard outside
    /// the index's directory (a name with a path in it) is refused.
    fn open_sharded(index_path: &Path) -> Result<WeightFile> {
        let meta = std::fs::metadata(index_path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::MissingFile { path: index_path.to_path_buf() },
            _ => invalid_file(index_path, e),
        })?;
        if meta.len() > MAX_HEADER {
            return Err(invalid_file(index_path, "larger than a shard index can be"));
        }
        let text = std::fs::read_to_string(index_path).map_err(|e| invalid_file(index_path, e))?;
        let index: ShardIndex = serde_json::from_str(&text).map_err(|e| invalid_file(index_path, e))?;
        let dir = index_path.parent().unwrap_or(Path::new("."));
        let mut names: Vec<&String> = index.weight_map.values().collect();
        names.sort();
        names.dedup();
        let mut shards = Vec::with_capacity(names.len());
        for name in names {
            if name.contains('/') || name.starts_with('.') {
                return Err(invalid_file(index_path, format!("shard \"{name}\" is not a file name in the model directory")));
            }
            shards.extend(Self::open_unprefixed(&dir.join(name))?.shards);
        }
        Ok(WeightFile { shards, path: index_path.to_path_buf(), identity: FileIdentity::of(&meta), prefix: String::new() })
    }

    /// A file whose tensors are named exactly as asked for (e.g. an output head's "weight").
    pub fn open_unprefixed(path: &Path) -> Result<WeightFile> {
        let file = File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::MissingFile { path: path.to_path_buf() },
            _ => invalid_file(path, e),
        })?;
        let meta = file.metadata().map_err(|e| invalid_file(path, e))?;
        let file = OpenFile { path: path.to_path_buf(), identity: FileIdentity::of(&meta), file };
        let truncated = |what: &str| invalid_file(path, format!("not a complete safetensors file ({what})"));
        let mut len8 = [0u8; 8];
        file.read(0, &mut len8).map_err(|_| truncated("no header"))?;
        let header_len = u64::from_le_bytes(len8);
        if header_len > MAX_HEADER || 8 + header_len > meta.len() {
            return Err(truncated("header larger than the file"));
        }
        let mut header = try_zeroed::<u8>(8 + header_len as usize)?;
        file.read(0, &mut header)?;
        // Parsed from the header alone (the crate's own reader wants the whole file in memory);
        // every tensor's byte range is checked against its shape and the file in `info`.
        let json = std::str::from_utf8(&header[8..]).map_err(|_| truncated("header is not UTF-8"))?;
        let meta_data: Metadata = serde_json::from_str(json).map_err(|e| invalid_file(path, format!("safetensors header: {e}")))?;
        let data_len = meta_data.tensors().values().map(|t| t.data_offsets.1).max().unwrap_or(0) as u64;
        if 8 + header_len + data_len > meta.len() {
            return Err(truncated(&format!("{data_len} bytes of tensor data declared, {} present", meta.len() - 8 - header_len)));
        }
        let identity = file.identity;
        let shard = Shard { file: Arc::new(file), data_start: 8 + header_len as usize, meta: meta_data };
        Ok(WeightFile { shards: vec![shard], path: path.to_path_buf(), identity, prefix: String::new() })
    }

    /// What the file (or the shard index) was when opened (a path whose identity differs holds
    /// another file).
    pub fn identity(&self) -> FileIdentity {
        self.identity
    }

    /// Whether tensor `name` (without the prefix) is present.
    pub fn has(&self, name: &str) -> bool {
        self.shape(name).is_some()
    }

    /// The shape of tensor `name` (without the prefix), if the file has it.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        let full = format!("{}{}", self.prefix, name);
        self.shards.iter().find_map(|s| s.meta.info(&full)).map(|i| i.shape.as_slice())
    }

    fn info(&self, name: &str, shape: &[usize]) -> Result<(&Shard, &TensorInfo)> {
        self.info_at(format!("{}{}", self.prefix, name), shape)
    }

    /// [`WeightFile::info`] of the tensor named `full` (with any prefix it has).
    fn info_at(&self, full: String, shape: &[usize]) -> Result<(&Shard, &TensorInfo)> {
        let (shard, info) = self
            .shards
            .iter()
            .find_map(|s| s.meta.info(&full).map(|i| (s, i)))
            .ok_or_else(|| Error::MissingTensor { path: self.path.clone(), tensor: full.clone() })?;
        let path = &shard.file.path;
        if info.shape != shape {
            return Err(Error::TensorShape { path: path.clone(), tensor: full, found: info.shape.clone(), expected: shape.to_vec() });
        }
        if !matches!(info.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            return Err(invalid_file(path, format!("tensor \"{full}\" has dtype {:?}; F32, F16 or BF16 expected", info.dtype)));
        }
        let (start, end) = info.data_offsets;
        let want = shape.iter().try_fold(info.dtype.bitsize() / 8, |a, &d| a.checked_mul(d));
        if end < start || Some(end - start) != want {
            return Err(invalid_file(path, format!("tensor \"{full}\" occupies bytes {start}..{end}, which do not fit its shape {shape:?}")));
        }
        Ok((shard, info))
    }

    /// The tensor `name` (without the file's prefix), checked against `shape`, as f32.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.read_f32(self.info(name, shape)?, shape)
    }

    /// The tensor named `name` whatever the prefix: a task head lies beside the prefixed body
    /// (`classifier.weight` next to `bert.embeddings…`).
    pub fn f32_unprefixed(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.read_f32(self.info_at(name.to_string(), shape)?, shape)
    }

    fn read_f32(&self, (shard, info): (&Shard, &TensorInfo), shape: &[usize]) -> Result<Vec<f32>> {
        let mut bytes = try_zeroed::<u8>(info.data_offsets.1 - info.data_offsets.0)?;
        shard.file.check()?;
        shard.file.read(shard.data_start + info.data_offsets.0, &mut bytes)?;
        let mut out = try_zeroed(shape.iter().product())?;
        convert(info.dtype, &bytes, &mut out);
        Ok(out)
    }

    /// A [rows, cols] tensor that stays in the file and is read one row at a time.
    pub fn table(&self, name: &str, rows: usize, cols: usize) -> Result<EmbeddingTable> {
        let (shard, info) = self.info(name, &[rows, cols])?;
        Ok(EmbeddingTable { file: shard.file.clone(), offset: shard.data_start + info.data_offsets.0, dtype: info.dtype, rows, cols })
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
    file: Arc<OpenFile>,
    offset: usize,
    dtype: Dtype,
    pub rows: usize,
    pub cols: usize,
}

impl EmbeddingTable {
    /// An error when the file changed since it was opened: call once per batch, before `row`.
    pub fn check(&self) -> Result<()> {
        self.file.check()
    }

    /// Copies row `i` (as f32) into `out`; callers bound-check ids against `rows` beforehand.
    pub fn row(&self, i: usize, out: &mut [f32]) -> Result<()> {
        let width = self.dtype.bitsize() / 8;
        let mut buf = [0u8; 4 * 1024];
        let mut done = 0;
        // In pieces of the stack buffer: rows are a few KiB (hidden size × dtype size).
        while done < self.cols {
            let n = (self.cols - done).min(buf.len() / width);
            let bytes = &mut buf[..n * width];
            self.file.read(self.offset + (i * self.cols + done) * width, bytes)?;
            convert(self.dtype, bytes, &mut out[done..done + n]);
            done += n;
        }
        Ok(())
    }
}
