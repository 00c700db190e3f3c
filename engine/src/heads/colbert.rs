//! BGE-M3 ColBERT (multi-vector) output and late-interaction scoring.
//!
//! A text's vectors are colbert_linear(hidden state) of every token after the first (the
//! <s>/CLS token is left out, the closing </s> kept), each L2-normalised; so a text of n
//! tokens gives n - 1 vectors, as BGE-M3's reference implementation (FlagEmbedding) does.

/// Row-major [rows, dim] vectors of one text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ColbertVectors {
    pub dim: usize,
    pub data: Vec<f32>,
}

impl ColbertVectors {
    /// From colbert_linear's output for a text's tokens after the first, [tokens - 1, dim]:
    /// each row normalised to unit length (x / max(‖x‖, 1e-12), as torch's F.normalize).
    pub fn normalized(mut data: Vec<f32>, dim: usize) -> ColbertVectors {
        for row in data.chunks_exact_mut(dim) {
            crate::heads::pooled::l2_normalize(row);
        }
        ColbertVectors { dim, data }
    }

    pub fn rows(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }
}

/// Late-interaction score of a query against a document, both row-major with `dim` columns:
/// for each query vector the largest dot product with any document vector, averaged over the
/// query vectors. This is FlagEmbedding's colbert_score (BGE-M3's ColBERT score), a number in
/// [-1, 1] for unit vectors; ColBERT's un-averaged sum is this times the query's vector count.
/// Accumulates in f64. Callers check that both have at least one row of `dim` values.
/// `interrupt` runs about every million multiply-adds (the inputs can be large arrays).
pub fn maxsim(query: &[f32], document: &[f32], dim: usize, interrupt: &mut dyn FnMut()) -> f64 {
    assert!(dim > 0 && query.len().is_multiple_of(dim) && document.len().is_multiple_of(dim) && !query.is_empty() && !document.is_empty());
    let mut work = 0;
    let mut total = 0.0;
    for q in query.chunks_exact(dim) {
        let mut best = f64::NEG_INFINITY;
        for d in document.chunks_exact(dim) {
            best = best.max(q.iter().zip(d).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>());
            work += dim;
            if work >= 1 << 20 {
                work = 0;
                interrupt();
            }
        }
        total += best;
    }
    total / (query.len() / dim) as f64
}
