//! Batching of pg_bge's per-row calls in the executor. `SELECT bge_embed(body, m) FROM t`,
//! `UPDATE t SET e = bge_embed(body, m)`, `INSERT ... SELECT`, `CREATE TABLE AS` and aggregates
//! over calls would each run one forward pass per row; a BGE Batch node (a custom scan, placed
//! by plan.rs as the executor starts) runs one pass per batch of rows, with results bitwise
//! those of the calls (the engine's results do not depend on the batch). bge.executor_batching
//! turns it off. Generated columns stay per row: PostgreSQL computes them in the table's insert
//! and update code, outside any plan; the vectorizer is their batched path.
use pgrx::pg_sys;

mod calls;
mod node;
mod plan;

pub fn init() {
    node::register();
    plan::init();
}

/// The pointers of a List of nodes.
///
/// # Safety
/// `list` is NIL or a List of pointers to `T`.
pub(crate) unsafe fn list_ptrs<T>(list: *mut pg_sys::List) -> Vec<*mut T> {
    // SAFETY: the caller's promise; a List's cells are its `length` elements.
    unsafe { (0..list_len(list)).map(|i| (*(*list).elements.add(i)).ptr_value as *mut T).collect() }
}

/// The length of a List (0 for NIL).
///
/// # Safety
/// `list` is NIL or a List.
pub(crate) unsafe fn list_len(list: *mut pg_sys::List) -> usize {
    // SAFETY: the caller's promise.
    unsafe { if list.is_null() { 0 } else { (*list).length as usize } }
}
