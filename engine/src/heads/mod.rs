//! What a model computes from the encoder's last hidden states, one module per head:
//! - [`pooled`]: the sentence embedding (CLS, mean, max, last token; then L2-normalised);
//! - [`sparse`] and [`colbert`]: BGE-M3's lexical weights and multi-vectors, whose linear
//!   layers [`m3`] loads;
//! - [`classifier`]: a cross-encoder's relevance score of a (query, passage) pair.
//!
//! [`crate::Model`] has one entry point per task (embed, sparse, ColBERT, rerank); each runs
//! the network over packed batches and hands the hidden states to its head here.
pub mod classifier;
pub mod colbert;
pub mod m3;
pub mod pooled;
pub mod sparse;
