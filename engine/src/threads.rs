//! The process's one rayon pool. A different thread count replaces it (the old pool's threads
//! exit once its last user is done), so however settings change, a process holds at most one
//! pool of at most [`available`] threads (plus, briefly, one being retired). Workers block all
//! signals: a PostgreSQL backend's signal handlers must run on its main thread.
use std::sync::{Arc, Mutex};

use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::error::{Error, Result};

/// Cores this process may run on.
pub fn available() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Worker threads `requested` means: 0 is [`available`]; more than the cores is the cores.
pub fn effective(requested: usize) -> usize {
    if requested == 0 {
        available()
    } else {
        requested.min(available())
    }
}

/// The pool of [`effective`]`(threads)` workers.
pub fn pool(threads: usize) -> Result<Arc<ThreadPool>> {
    static POOL: Mutex<Option<Arc<ThreadPool>>> = Mutex::new(None);
    let threads = effective(threads);
    let mut current = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(pool) = current.as_ref().filter(|p| p.current_num_threads() == threads) {
        return Ok(pool.clone());
    }
    // Dropping the previous Arc here lets its threads exit when no call still uses them.
    *current = None;
    let pool = ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("bge-worker-{i}"))
        .start_handler(|_| block_signals())
        .build()
        .map_err(|e| Error::Internal(format!("cannot start {threads} worker threads: {e}")))?;
    let pool = Arc::new(pool);
    *current = Some(pool.clone());
    Ok(pool)
}

fn block_signals() {
    #[cfg(unix)]
    // SAFETY: plain libc calls on a zero-initialised sigset owned by this frame.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Whether work for `pool` should run on the calling thread: a one-thread pool would only add a
/// hand-off to its worker and back per op (parallel-query processes run with one thread each).
pub(crate) fn inline(pool: &rayon::ThreadPool) -> bool {
    pool.current_num_threads() == 1
}

/// Times a thread outside a pool handed work to it (see [`in_pool`]).
static POOL_TRIPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Runs `f` on `pool`: from outside it, a trip there and back (a wake-up and a hand-off each
/// way, tens of microseconds); from one of its own threads, or for a one-thread pool (whose
/// work runs on the caller, see [`inline`]), a plain call.
pub fn in_pool<R: Send>(pool: &rayon::ThreadPool, f: impl FnOnce() -> R + Send) -> R {
    if inline(pool) {
        return f();
    }
    if pool.current_thread_index().is_none() {
        POOL_TRIPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    pool.install(f)
}

/// How many trips into a pool this process made so far (tests check that a short forward pass
/// makes one, not one per op).
pub fn pool_trips() -> usize {
    POOL_TRIPS.load(std::sync::atomic::Ordering::Relaxed)
}
