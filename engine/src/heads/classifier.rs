//! A cross-encoder's sequence-classification head (bge-reranker): one relevance logit per
//! (query, passage) pair from the first token's last hidden state,
//! logit = W_out · tanh(W_dense · h₀ + b_dense) + b_out,
//! what FlagReranker.compute_score returns (without its optional sigmoid). BERT keeps the dense
//! layer as its pooler (`bert.pooler.dense`) and the output layer as `classifier`; XLM-RoBERTa
//! keeps both in its classification head (`classifier.dense`, `classifier.out_proj`).
//!
//! A few thousand multiply-adds per pair beside the encoder's millions: plain Rust, summed in
//! f64, on the host whatever backend ran the encoder.
use crate::error::Result;
use crate::weights::WeightFile;

pub struct Classifier {
    hidden: usize,
    dense_weight: Vec<f32>,
    dense_bias: Vec<f32>,
    out_weight: Vec<f32>,
    out_bias: f32,
}

impl Classifier {
    /// The head of a `model_type` ("bert" or "xlm-roberta") classifier with one label.
    pub fn load(w: &WeightFile, model_type: &str, hidden: usize) -> Result<Classifier> {
        let (dense_weight, dense_bias, out_weight, out_bias) = if model_type == "bert" {
            (
                w.f32("pooler.dense.weight", &[hidden, hidden])?,
                w.f32("pooler.dense.bias", &[hidden])?,
                w.f32_unprefixed("classifier.weight", &[1, hidden])?,
                w.f32_unprefixed("classifier.bias", &[1])?,
            )
        } else {
            (
                w.f32_unprefixed("classifier.dense.weight", &[hidden, hidden])?,
                w.f32_unprefixed("classifier.dense.bias", &[hidden])?,
                w.f32_unprefixed("classifier.out_proj.weight", &[1, hidden])?,
                w.f32_unprefixed("classifier.out_proj.bias", &[1])?,
            )
        };
        Ok(Classifier { hidden, dense_weight, dense_bias, out_weight, out_bias: out_bias[0] })
    }

    /// The logit of a sequence whose first token's hidden state is `first` [hidden].
    pub fn score(&self, first: &[f32]) -> f32 {
        let h = self.hidden;
        let mut logit = self.out_bias as f64;
        for (o, row) in self.dense_weight.chunks_exact(h).enumerate() {
            let z = self.dense_bias[o] as f64 + row.iter().zip(first).map(|(&w, &x)| w as f64 * x as f64).sum::<f64>();
            logit += self.out_weight[o] as f64 * (z as f32).tanh() as f64;
        }
        logit as f32
    }
}
