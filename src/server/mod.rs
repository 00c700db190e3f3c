//! The model server: with `shared_preload_libraries = 'pg_bge'`, one background worker owns
//! every loaded model and runs every forward pass; backends tokenise and exchange token ids and
//! results with it through request slots in shared memory.
//!
//! Protocol (one slot per request in flight; `Slot::state` moves ownership of the slot's
//! other fields and its buffer between the two sides, Release on hand-over, Acquire on take):
//!
//! ```text
//! backend: FREE -> FILLING -> SUBMITTED                     (request written, worker woken)
//! worker:  SUBMITTED -> RUNNING -> SEND_MORE (a request in pieces)   backend: -> SUBMITTED
//! worker:  SUBMITTED -> RUNNING -> RESULT                    (first piece of the result)
//! backend: RESULT -> FETCH (more pieces) | FREE (done)       worker: FETCH -> RUNNING -> RESULT
//! backend leaving early: SUBMITTED|SEND_MORE|RESULT -> FREE, RUNNING|FETCH -> ABANDONED
//! ```
//!
//! What a request and a result hold, as words, is wire.rs. Requests and results larger than a
//! slot's buffer travel in pieces; the backend splits big arrays into several requests so that
//! one text's request rarely needs more than one piece. Latches wake either side; every wait
//! also times out so a vanished worker is noticed (its exit callback normally fails the slots it
//! held, waking their owners).
//!
//! Fairness between roles (one role's flood must not stall another's short request): a role
//! holding more than its share of slots may not take the last free ones (client.rs `claim`);
//! the worker keeps one queue per role and builds each batch of at most bge.max_batch_tokens
//! tokens round-robin across roles, and within a role across its requests, computing a large
//! request over several batches (worker.rs `next_batch`). The engine's results do not depend
//! on how texts are batched, so this changes no result.
pub mod client;
mod status;
pub mod wire;
pub mod worker;

use std::sync::atomic::{AtomicI32, AtomicI64, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use pgrx::bgworkers::{BackgroundWorkerBuilder, BgWorkerStartTime};
use pgrx::pg_sys;

use crate::gucs;
pub use wire::{Output, Target};

pub const FREE: u32 = 0;
pub const FILLING: u32 = 1;
pub const SUBMITTED: u32 = 2;
pub const RUNNING: u32 = 3;
pub const RESULT: u32 = 4;
pub const FETCH: u32 = 5;
pub const ABANDONED: u32 = 6;
pub const SEND_MORE: u32 = 7;

/// A loaded copy of a model, as bge_models() and bge_server_status() show it.
#[derive(Clone, Debug)]
pub struct LoadedCopy {
    pub dir: std::path::PathBuf,
    pub name: String,
    pub device: String,
    pub isa: Option<String>,
    pub precision: String,
    pub load_ms: f64,
    /// The process's memory growth while loading it (model server copies only).
    pub resident_bytes: Option<u64>,
}

impl LoadedCopy {
    pub fn of(m: &bge_engine::Model) -> LoadedCopy {
        LoadedCopy {
            dir: std::path::PathBuf::new(),
            name: String::new(),
            device: m.backend.name().into(),
            isa: m.isa.map(str::to_string),
            precision: m.precision.into(),
            load_ms: m.load_time.as_secs_f64() * 1e3,
            resident_bytes: None,
        }
    }
}

pub const NAME_BYTES: usize = 256;
pub const DIR_BYTES: usize = 1024;
pub const MESSAGE_BYTES: usize = 1024;
pub const HINT_BYTES: usize = 512;
pub const MAX_MODELS: usize = 32;

/// One request slot's fixed fields; its buffer lives in the region after all slots.
#[repr(C)]
pub struct Slot {
    pub state: AtomicU32,
    pub owner_pid: AtomicI32,
    /// The owner's process latch (PGPROC memory: the same address in every process).
    pub owner_latch: AtomicPtr<pg_sys::Latch>,
    /// Unique per submission, so a result piece is never served to a later request.
    pub request_id: u64,
    /// The epoch of the worker that took the request (0 until taken).
    pub epoch: AtomicU64,
    /// The role the request is for (GetUserId() when the slot was claimed): requests are
    /// served fairly between roles, and a role may not take the last free slots while it
    /// holds more than its share (see client.rs).
    pub role: AtomicU32,
    /// 1 while the request is in the batch the worker computes (RUNNING otherwise means
    /// taken and waiting for its turn): bge_server_status() counts it in flight, not queued.
    pub computing: AtomicU32,
    // Request, written by the backend while FILLING.
    /// [`Output`] and [`Target`] as wire.rs codes them.
    pub output: u8,
    pub device: u8,
    pub precision: u8,
    pub n_seqs: u32,
    pub n_tokens: u32,
    /// The request's words (lengths, ids, type ids) and the piece in the buffer now.
    pub request_words: u64,
    pub request_offset: u64,
    pub request_piece: u64,
    pub model: [u8; NAME_BYTES],
    pub dir: [u8; DIR_BYTES],
    // Result, written by the worker while RUNNING.
    pub failed: bool,
    pub sqlstate: i32,
    pub total_words: u64,
    pub piece_offset: u64,
    pub piece_words: u64,
    pub message: [u8; MESSAGE_BYTES],
    pub hint: [u8; HINT_BYTES],
}

/// A model the worker holds, as bge_server_status() shows it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModelEntry {
    pub dir: [u8; DIR_BYTES],
    pub name: [u8; NAME_BYTES],
    pub device: [u8; 16],
    pub isa: [u8; 16],
    pub precision: [u8; 16],
    pub resident_bytes: u64,
    pub load_ms: f64,
}

#[repr(C)]
pub struct Header {
    pub worker_pid: AtomicI32,
    pub worker_latch: AtomicPtr<pg_sys::Latch>,
    /// Incremented by each worker start: a request taken by an earlier worker is lost.
    pub epoch: AtomicU64,
    pub started_at: AtomicI64,
    /// What the worker's CUDA probe found: 0 not yet, 1 no usable GPU, 2 a GPU.
    pub gpu: AtomicU32,
    pub next_request_id: AtomicU64,
    pub requests: AtomicU64,
    pub batches: AtomicU64,
    pub sequences: AtomicU64,
    pub tokens: AtomicU64,
    /// Seqlock over `models`: odd while the worker rewrites the table.
    pub models_version: AtomicU64,
    pub model_count: u32,
    pub models: [ModelEntry; MAX_MODELS],
    pub slot_count: u32,
    /// Buffer bytes per slot (a multiple of 8).
    pub slot_bytes: u64,
}

static mut HEADER: *mut Header = std::ptr::null_mut();

/// The shared region, when pg_bge was preloaded (None otherwise).
pub fn header() -> Option<&'static Header> {
    // SAFETY: set once in the postmaster's shmem startup hook (inherited by fork), never freed.
    unsafe { HEADER.as_ref() }
}

impl Header {
    pub fn slot(&self, i: usize) -> *mut Slot {
        assert!(i < self.slot_count as usize);
        // SAFETY: the slots follow the header (see region_size), slot_count of them.
        unsafe { (self as *const Header as *mut u8).add(slots_offset()).cast::<Slot>().add(i) }
    }

    /// Slot `i`'s buffer, as 32-bit words.
    pub fn buffer(&self, i: usize) -> *mut u32 {
        assert!(i < self.slot_count as usize);
        let offset = buffers_offset(self.slot_count as usize) + i * self.slot_bytes as usize;
        // SAFETY: inside the region sized by region_size.
        unsafe { (self as *const Header as *mut u8).add(offset).cast::<u32>() }
    }

    pub fn buffer_words(&self) -> usize {
        self.slot_bytes as usize / 4
    }

    pub fn wake_worker(&self) {
        let latch = self.worker_latch.load(Ordering::Acquire);
        if !latch.is_null() {
            // SAFETY: the worker's PGPROC latch, in shared memory for the server's life.
            unsafe { pg_sys::SetLatch(latch) };
        }
    }

    /// The worker's model table, read consistently.
    pub fn models(&self) -> Vec<ModelEntry> {
        loop {
            let before = self.models_version.load(Ordering::Acquire);
            if before % 2 == 1 {
                std::thread::yield_now();
                continue;
            }
            // SAFETY: plain reads; the version check below discards a torn copy.
            let n = (self.model_count as usize).min(MAX_MODELS);
            let copy: Vec<ModelEntry> = (0..n).map(|i| unsafe { std::ptr::read_volatile(&self.models[i]) }).collect();
            if self.models_version.load(Ordering::Acquire) == before {
                return copy;
            }
        }
    }
}

fn align(n: usize) -> usize {
    n.div_ceil(64) * 64
}

fn slots_offset() -> usize {
    align(std::mem::size_of::<Header>())
}

fn buffers_offset(slots: usize) -> usize {
    slots_offset() + align(slots * std::mem::size_of::<Slot>())
}

fn region_size() -> usize {
    let slots = gucs::server_slots();
    buffers_offset(slots) + slots * gucs::server_slot_bytes()
}

/// NUL-terminated copy of `s` into `dst` (cut at a character boundary if too long).
pub fn put_str(dst: &mut [u8], s: &str) {
    let mut n = s.len().min(dst.len() - 1);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    dst[..n].copy_from_slice(&s.as_bytes()[..n]);
    dst[n] = 0;
}

pub fn get_str(src: &[u8]) -> String {
    let n = src.iter().position(|&b| b == 0).unwrap_or(src.len());
    String::from_utf8_lossy(&src[..n]).into_owned()
}

static mut PREV_SHMEM_REQUEST_HOOK: pg_sys::shmem_request_hook_type = None;
static mut PREV_SHMEM_STARTUP_HOOK: pg_sys::shmem_startup_hook_type = None;

/// From _PG_init while shared_preload_libraries is processed: reserves the region and
/// registers the worker.
pub fn init() {
    // SAFETY: _PG_init runs in the postmaster before any other process exists.
    unsafe {
        PREV_SHMEM_REQUEST_HOOK = pg_sys::shmem_request_hook;
        pg_sys::shmem_request_hook = Some(shmem_request);
        PREV_SHMEM_STARTUP_HOOK = pg_sys::shmem_startup_hook;
        pg_sys::shmem_startup_hook = Some(shmem_startup);
    }
    BackgroundWorkerBuilder::new("pg_bge model server")
        .set_type("pg_bge model server")
        .set_library("pg_bge")
        .set_function("bge_server_main")
        .enable_shmem_access(None)
        // Connected to no database (as the logical replication launcher): it then shows in
        // pg_stat_activity and pg_terminate_backend reaches it.
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::ConsistentState)
        // An exit with code 1 (ERROR, SIGTERM) restarts it after a second; its requests fail.
        .set_restart_time(Some(Duration::from_secs(1)))
        .load();
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn shmem_request() {
    // SAFETY: the postmaster's shmem_request_hook, the only place space may be requested.
    unsafe {
        if let Some(prev) = PREV_SHMEM_REQUEST_HOOK {
            prev();
        }
        pg_sys::RequestAddinShmemSpace(region_size());
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn shmem_startup() {
    // SAFETY: the postmaster's shmem_startup_hook (also after a crash restart), under
    // AddinShmemInitLock as ShmemInitStruct requires.
    unsafe {
        if let Some(prev) = PREV_SHMEM_STARTUP_HOOK {
            prev();
        }
        let lock = &raw mut (*pg_sys::MainLWLockArray.add(21)).lock;
        pg_sys::LWLockAcquire(lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let mut found = false;
        let size = region_size();
        let region = pg_sys::ShmemInitStruct(c"pg_bge model server".as_ptr(), size, &mut found).cast::<u8>();
        if !found {
            std::ptr::write_bytes(region, 0, size);
            let h = &mut *region.cast::<Header>();
            h.slot_count = gucs::server_slots() as u32;
            h.slot_bytes = gucs::server_slot_bytes() as u64;
        }
        HEADER = region.cast();
        pg_sys::LWLockRelease(lock);
    }
}

/// Sets a process latch (a backend's or the worker's); null is ignored.
pub fn set_latch(latch: *mut pg_sys::Latch) {
    if !latch.is_null() {
        // SAFETY: PGPROC latches live in shared memory for the server's life; setting one of a
        // process that has since exited only wakes its successor spuriously.
        unsafe { pg_sys::SetLatch(latch) };
    }
}

/// Waits on this process's latch for at most `timeout`, then resets it.
pub fn wait(timeout: Duration) {
    // SAFETY: MyLatch is this process's latch; called on the main thread.
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            timeout.as_millis() as _,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
}

/// Compare-and-swap of a slot's state.
pub fn swap_state(slot: &Slot, from: u32, to: u32) -> bool {
    slot.state.compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire).is_ok()
}
