//! Explicit rayon pools, one per thread count, created on first use and kept for the process.
//! Workers block all signals: a PostgreSQL backend's signal handlers must run on its main thread.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rayon::{ThreadPool, ThreadPoolBuilder};

pub fn available() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

pub fn pool(threads: usize) -> Arc<ThreadPool> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<ThreadPool>>>> = OnceLock::new();
    let threads = if threads == 0 { available() } else { threads };
    let mut pools = POOLS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    pools
        .entry(threads)
        .or_insert_with(|| {
            Arc::new(
                ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("bge-worker-{i}"))
                    .start_handler(|_| block_signals())
                    .build()
                    .expect("rayon thread pool"),
            )
        })
        .clone()
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
