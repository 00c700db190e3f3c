//! The model server's wire format, both directions, in one place. A request is its fixed fields
//! (model, directory, [`Output`], [`Target`]) and its sequences as 32-bit words: every length,
//! then every token id, then every token type id. A result is one entry per sequence,
//! `[count, count words]`: a dense vector as f32 bits, sparse weights as (id, weight bits)
//! pairs, ColBERT vectors with their width first, a reranker's score as one f32. Every decoder
//! refuses what it does not know: a value is never read as a default.
use bge_engine::backend::Precision;
use bge_engine::heads::colbert::ColbertVectors;
use bge_engine::heads::sparse::SparseWeights;
use bge_engine::tokenize::Encoded;

use crate::gucs::Device;

/// What a request asks for.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Output {
    /// Pooled (normalised) vectors.
    Dense,
    /// BGE-M3 sparse weights.
    Sparse,
    /// BGE-M3 ColBERT vectors.
    Colbert,
    /// A reranker's relevance score of each (query, passage) pair.
    Score,
}

/// Which copy of the model computes: bge.device and the linear layers' precision.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Target {
    pub device: Device,
    pub precision: Precision,
}

const OUTPUTS: [Output; 4] = [Output::Dense, Output::Sparse, Output::Colbert, Output::Score];
const DEVICES: [Device; 3] = [Device::Auto, Device::Cpu, Device::Cuda];

/// `value`'s position in `all` as a byte.
fn byte_of<T: PartialEq>(all: &[T], value: T) -> u8 {
    all.iter().position(|v| *v == value).expect("every value is listed") as u8
}

/// The value at position `byte` of `all`, or an error naming `what`.
fn of_byte<T: Copy>(all: &[T], byte: u8, what: &str) -> Result<T, String> {
    all.get(byte as usize).copied().ok_or_else(|| format!("unknown model server {what} {byte}"))
}

impl Output {
    pub fn to_byte(self) -> u8 {
        byte_of(&OUTPUTS, self)
    }

    pub fn from_byte(byte: u8) -> Result<Output, String> {
        of_byte(&OUTPUTS, byte, "output")
    }
}

impl Target {
    /// (device, precision) bytes.
    pub fn to_bytes(self) -> (u8, u8) {
        (byte_of(&DEVICES, self.device), byte_of(&Precision::ALL, self.precision))
    }

    pub fn from_bytes(device: u8, precision: u8) -> Result<Target, String> {
        Ok(Target { device: of_byte(&DEVICES, device, "device")?, precision: of_byte(&Precision::ALL, precision, "precision")? })
    }
}

/// Words one sequence takes in a request.
pub fn request_words(e: &Encoded) -> usize {
    1 + 2 * e.ids.len()
}

/// The request's words: lengths, then ids, then type ids.
pub fn encode_request(encoded: &[Encoded]) -> Vec<u32> {
    let mut words = Vec::with_capacity(encoded.iter().map(request_words).sum());
    words.extend(encoded.iter().map(|e| e.ids.len() as u32));
    words.extend(encoded.iter().flat_map(|e| e.ids.iter().copied()));
    words.extend(encoded.iter().flat_map(|e| e.type_ids.iter().copied()));
    words
}

/// The `n_seqs` sequences of a request's words.
pub fn decode_request(words: &[u32], n_seqs: usize) -> Result<Vec<Encoded>, String> {
    let lens = words.get(..n_seqs).ok_or("model server request is shorter than its lengths")?;
    let tokens: usize = lens.iter().map(|&l| l as usize).sum();
    if words.len() != n_seqs + 2 * tokens {
        return Err("model server request lengths do not add up".into());
    }
    let (ids, type_ids) = words[n_seqs..].split_at(tokens);
    let mut at = 0;
    Ok(lens
        .iter()
        .map(|&len| {
            let r = at..at + len as usize;
            at = r.end;
            Encoded { ids: ids[r.clone()].to_vec(), type_ids: type_ids[r].to_vec() }
        })
        .collect())
}

/// One sequence's result words (the worker's side), by output.
pub fn dense_words(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

pub fn sparse_words(s: &SparseWeights) -> Vec<u32> {
    s.weights.iter().flat_map(|&(id, w)| [id, w.to_bits()]).collect()
}

pub fn colbert_words(c: &ColbertVectors) -> Vec<u32> {
    std::iter::once(c.dim as u32).chain(c.data.iter().map(|x| x.to_bits())).collect()
}

pub fn score_words(score: f32) -> Vec<u32> {
    vec![score.to_bits()]
}

/// Appends one sequence's result to a request's result words.
pub fn append_result(out: &mut Vec<u32>, values: &[u32]) {
    out.push(values.len() as u32);
    out.extend_from_slice(values);
}

/// A request's result words, one entry per sequence (`n` of them, nothing left over).
pub fn split_results(words: &[u32], n: usize) -> Result<Vec<Vec<u32>>, String> {
    let mut out = Vec::with_capacity(n);
    let mut at = 0;
    for _ in 0..n {
        let count = *words.get(at).ok_or("model server result is shorter than its entries")? as usize;
        let values = words.get(at + 1..at + 1 + count).ok_or("model server result entry overruns the result")?;
        out.push(values.to_vec());
        at += 1 + count;
    }
    if at != words.len() {
        return Err("model server result has trailing words".into());
    }
    Ok(out)
}

/// One sequence's result words (the backend's side), by output.
pub fn dense(words: Vec<u32>) -> Vec<f32> {
    words.into_iter().map(f32::from_bits).collect()
}

pub fn sparse(words: Vec<u32>) -> Result<SparseWeights, String> {
    if !words.len().is_multiple_of(2) {
        return Err("model server sparse result has an odd number of words".into());
    }
    Ok(SparseWeights { weights: words.chunks_exact(2).map(|p| (p[0], f32::from_bits(p[1]))).collect() })
}

pub fn score(words: Vec<u32>) -> Result<f32, String> {
    match words.as_slice() {
        &[bits] => Ok(f32::from_bits(bits)),
        _ => Err("model server score result is not one word".into()),
    }
}

pub fn colbert(words: Vec<u32>) -> Result<ColbertVectors, String> {
    match words.split_first() {
        Some((&dim, data)) if dim > 0 && data.len().is_multiple_of(dim as usize) => Ok(ColbertVectors { dim: dim as usize, data: dense(data.to_vec()) }),
        _ => Err("model server ColBERT result has no whole vectors".into()),
    }
}
