//! Model architectures, written once over the backend [`Ops`](crate::backend::Ops).
pub mod encoder;
pub mod m3_heads;

use crate::batch::PackedBatch;
use crate::error::Result;

/// A loaded network that turns a packed batch into last hidden states [tokens, hidden].
pub trait Forward: Send + Sync {
    /// `interrupt` is called on the calling thread between layers; it may unwind (PostgreSQL
    /// cancel) and the engine holds nothing that would leak.
    fn forward(&self, pool: &rayon::ThreadPool, batch: &PackedBatch, interrupt: &mut dyn FnMut()) -> Result<Vec<f32>>;
}
