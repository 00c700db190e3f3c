//! BGE-M3 sparse (lexical) weights: each token's weight is relu(sparse_linear(hidden state));
//! a text's weight for a vocabulary id is the largest over the tokens with that id; the cls,
//! eos, pad and unk tokens and weights that are not positive are left out. This is the rule
//! of BGE-M3's reference implementation (FlagEmbedding), whose output the goldens pin.

/// A text's lexical weights: (token id, weight > 0), ids unique, in the order of each id's
/// first token with a positive weight (the order FlagEmbedding's dictionaries have).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseWeights {
    pub weights: Vec<(u32, f32)>,
}

impl SparseWeights {
    /// Folds one sequence's token ids and their raw head outputs (before relu).
    pub fn from_tokens(ids: &[u32], raw: &[f32], skip: &[u32]) -> SparseWeights {
        let mut weights: Vec<(u32, f32)> = Vec::new();
        let mut slot: std::collections::HashMap<u32, usize> = std::collections::HashMap::new();
        for (&id, &w) in ids.iter().zip(raw) {
            // relu, then only positive weights count: both are "w > 0".
            if w.is_nan() || w <= 0.0 || skip.binary_search(&id).is_ok() {
                continue;
            }
            match slot.get(&id) {
                Some(&i) => weights[i].1 = weights[i].1.max(w),
                None => {
                    slot.insert(id, weights.len());
                    weights.push((id, w));
                }
            }
        }
        SparseWeights { weights }
    }

    /// Keyed by token text (`text_of` = the tokenizer's decode of one id). Ids whose texts
    /// coincide share a key, and the one whose first positive token comes later wins, as in
    /// FlagEmbedding's convert_id_to_token; the key keeps its first place.
    pub fn by_token_text<E>(&self, mut text_of: impl FnMut(u32) -> Result<String, E>) -> Result<Vec<(String, f32)>, E> {
        let mut out: Vec<(String, f32)> = Vec::with_capacity(self.weights.len());
        let mut slot: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for &(id, w) in &self.weights {
            let text = text_of(id)?;
            match slot.get(&text) {
                Some(&i) => out[i].1 = w,
                None => {
                    slot.insert(text.clone(), out.len());
                    out.push((text, w));
                }
            }
        }
        Ok(out)
    }

    /// BGE-M3's lexical matching score: the sum over shared ids of the two weights' product
    /// (what pgvector's inner product of the two sparsevecs gives). Accumulates in f64.
    pub fn inner_product(&self, other: &SparseWeights) -> f64 {
        let theirs: std::collections::HashMap<u32, f32> = other.weights.iter().copied().collect();
        self.weights.iter().filter_map(|(id, w)| theirs.get(id).map(|v| *w as f64 * *v as f64)).sum()
    }

    /// pgvector's sparsevec text form, `{index:value,...}/dimensions`, with 1-based indices
    /// (id + 1) in increasing order and `dimensions` = the vocabulary size.
    pub fn sparsevec_literal(&self, dimensions: usize) -> String {
        let mut sorted = self.weights.clone();
        sorted.sort_unstable_by_key(|&(id, _)| id);
        let body: Vec<String> = sorted.iter().map(|(id, w)| format!("{}:{}", id + 1, w)).collect();
        format!("{{{}}}/{}", body.join(","), dimensions)
    }
}
