//! bge-engine: loads a sentence-transformers model directory and computes its embeddings.
//!
//! The crate never touches PostgreSQL; `pg_bge` wraps it in thin SQL shims. Pipeline:
//! text -> [`tokenize`] -> packed [`batch::PackedBatch`] -> [`models`] forward on a
//! [`backend`] -> a [`heads`] head over the last hidden states, exactly as the directory's
//! config says: pooled (L2-normalised) embeddings, BGE-M3's sparse lexical weights and ColBERT
//! vectors, or a cross-encoder's relevance score.
pub mod backend;
pub mod batch;
pub mod chunk;
pub mod config;
pub mod distance;
pub mod error;
pub mod heads;
pub mod model;
pub mod models;
pub mod store;
pub mod threads;
pub mod tokenize;
pub mod weights;

pub use error::{Error, Result};
pub use model::{Frontend, Model, RunOptions, TextRole};
pub use store::ModelStore;
