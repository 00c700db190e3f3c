//! Model architectures, written once over the backend [`Ops`](crate::backend::Ops).
pub mod decoder;
pub mod encoder;

use crate::batch::PackedBatch;
use crate::config::Pooling;
use crate::error::Result;

/// A loaded network that turns a packed batch into last hidden states [tokens, hidden].
pub trait Forward: Send + Sync {
    /// `interrupt` is called on the calling thread between layers; it may unwind (PostgreSQL
    /// cancel) and the engine holds nothing that would leak.
    fn forward(&self, pool: &rayon::ThreadPool, batch: &PackedBatch, interrupt: &mut dyn FnMut()) -> Result<Vec<f32>>;

    /// Most tokens a pass should take for speed, when the backend prefers shorter passes than
    /// bge.max_batch_tokens allows (see [`Ops::pass_output_bytes`](crate::backend::Ops::pass_output_bytes)).
    fn preferred_pass_tokens(&self) -> Option<usize> {
        None
    }

    /// One pooled (and, with `normalize`, L2-normalised) vector per sequence of `batch`. The
    /// default pools [`forward`](Forward::forward)'s hidden states on the host; a GPU backend
    /// overrides it to pool where the hidden states are and copy back only the vectors.
    fn embed(
        &self,
        pool: &rayon::ThreadPool,
        batch: &PackedBatch,
        hidden: usize,
        pooling: Pooling,
        normalize: bool,
        interrupt: &mut dyn FnMut(),
    ) -> Result<Vec<Vec<f32>>> {
        let states = self.forward(pool, batch, interrupt)?;
        Ok(crate::heads::pooled::pool(&states, hidden, batch, pooling, normalize))
    }
}
