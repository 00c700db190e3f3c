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

/// Calls `func(arg)` when `memory` is reset or deleted (at the query's end, or when an ERROR
/// frees it).
///
/// # Safety
/// `memory` is a live memory context; `arg` stays valid until the callback runs.
pub(crate) unsafe fn on_reset(memory: pg_sys::MemoryContext, func: unsafe extern "C-unwind" fn(*mut std::ffi::c_void), arg: *mut std::ffi::c_void) {
    // SAFETY: the callback record lives in the memory it watches, as PostgreSQL requires.
    unsafe {
        let callback = pg_sys::MemoryContextAlloc(memory, std::mem::size_of::<pg_sys::MemoryContextCallback>()) as *mut pg_sys::MemoryContextCallback;
        (*callback).func = Some(func);
        (*callback).arg = arg;
        pg_sys::MemoryContextRegisterResetCallback(memory, callback);
    }
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
