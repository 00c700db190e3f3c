//! bge-engine: loads a sentence-transformers model directory and computes its embeddings.
//!
//! The crate never touches PostgreSQL; `pg_bge` wraps it in thin SQL shims. Pipeline:
//! text -> [`tokenize`] -> packed [`batch::PackedBatch`] -> [`models::encoder`] forward on a
//! [`backend`] -> [`pooling`] -> L2 normalisation, exactly as the directory's config says.
//! BERT and XLM-RoBERTa share the encoder; BGE-M3's heads add [`sparse`] lexical weights and
//! [`colbert`] vectors.
pub mod backend;
pub mod batch;
pub mod chunk;
pub mod colbert;
pub mod config;
pub mod distance;
pub mod error;
pub mod model;
pub mod models;
pub mod pooling;
pub mod sparse;
pub mod store;
pub mod threads;
pub mod tokenize;
pub mod weights;

pub use error::{Error, Result};
pub use model::{Frontend, Model, RunOptions, TextRole};
pub use store::ModelStore;
