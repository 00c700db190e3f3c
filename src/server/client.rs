//! The backend side: submits token ids to the model server and waits for the results, with
//! cancel, statement_timeout and a vanished worker all ending the wait promptly.
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use bge_engine::tokenize::Encoded;
use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

use super::{get_str, header, put_str, swap_state, wire, Header, Output, Slot};
use super::{ABANDONED, FETCH, FILLING, FREE, RESULT, RUNNING, SEND_MORE, SUBMITTED};
use crate::compute::Call;
use crate::errors::raise_with;
use crate::gucs;

/// How long a request waits for a worker that is not running (it restarts a second after it
/// exits; a model load may follow) before failing.
const WORKER_START_WAIT: Duration = Duration::from_secs(10);
/// Longest sleep between checks that the worker is alive; cancel wakes a wait at once.
const POLL: Duration = Duration::from_millis(100);

/// Whether this session's embeddings go to the model server.
pub fn active() -> bool {
    header().is_some() && gucs::server()
}

/// Whether the model server found a usable GPU.
pub fn server_has_gpu() -> bool {
    header().is_some_and(|h| h.gpu.load(Ordering::Acquire) == 2)
}

/// The models the server holds.
pub fn loaded_models() -> Vec<super::LoadedCopy> {
    let Some(h) = header() else { return Vec::new() };
    h.models()
        .iter()
        .map(|e| super::LoadedCopy {
            dir: get_str(&e.dir).into(),
            name: get_str(&e.name),
            device: get_str(&e.device),
            isa: Some(get_str(&e.isa)).filter(|s| !s.is_empty()),
            precision: get_str(&e.precision),
            load_ms: e.load_ms,
            resident_bytes: Some(e.resident_bytes),
        })
        .collect()
}

/// The slot this backend holds, for the exit callback (-1: none).
static HELD_SLOT: AtomicI64 = AtomicI64::new(-1);

/// Per sequence of `encoded`, its result's words (wire.rs decodes them by output).
pub fn compute(call: &Call, output: Output, encoded: &[Encoded]) -> Vec<Vec<u32>> {
    let h = header().expect("model server region");
    let capacity = h.buffer_words();
    let mut results = Vec::with_capacity(encoded.len());
    let mut start = 0;
    while start < encoded.len() {
        // As many sequences as fit one slot's buffer (at least one: a longer one goes in pieces).
        let mut end = start;
        let mut words = 0;
        while end < encoded.len() && (end == start || words + wire::request_words(&encoded[end]) <= capacity) {
            words += wire::request_words(&encoded[end]);
            end += 1;
        }
        results.extend(round_trip(h, call, output, &encoded[start..end]));
        start = end;
    }
    results
}

/// Releases the slot on every way out of a request: return, ERROR (unwinding), and FATAL
/// (the exit callback).
struct HeldSlot<'a> {
    h: &'a Header,
    index: usize,
}

impl Drop for HeldSlot<'_> {
    fn drop(&mut self) {
        release(self.h, self.index);
        HELD_SLOT.store(-1, Ordering::Relaxed);
    }
}

/// Gives slot `index` back: at once where this side owns it, else marked for the worker.
fn release(h: &Header, index: usize) {
    // SAFETY: the slot array lives for the server's life.
    let slot = unsafe { &*h.slot(index) };
    loop {
        let state = slot.state.load(Ordering::Acquire);
        let next = match state {
            FILLING | SUBMITTED | SEND_MORE | RESULT => FREE,
            RUNNING | FETCH => ABANDONED,
            _ => return,
        };
        if swap_state(slot, state, next) {
            return;
        }
    }
}

/// Registered once per backend: a FATAL exit (pg_terminate_backend) does not unwind.
fn register_exit_callback() {
    static mut REGISTERED: bool = false;
    #[pgrx::pg_guard]
    unsafe extern "C-unwind" fn on_exit(_code: i32, _arg: pg_sys::Datum) {
        let index = HELD_SLOT.swap(-1, Ordering::Relaxed);
        if let (Some(h), Ok(index)) = (header(), usize::try_from(index)) {
            release(h, index);
        }
    }
    // SAFETY: main thread only; before_shmem_exit keeps the function pointer.
    unsafe {
        if !REGISTERED {
            pg_sys::before_shmem_exit(Some(on_exit), pg_sys::Datum::from(0));
            REGISTERED = true;
        }
    }
}

fn claim(h: &Header) -> HeldSlot<'_> {
    register_exit_callback();
    let n = h.slot_count as usize;
    // SAFETY: plain reads of this process's pid and current user.
    let (first, role) = unsafe { (pg_sys::MyProcPid as usize % n, pg_sys::GetUserId().to_u32()) };
    let mut poll = Duration::from_millis(1);
    loop {
        if may_claim(h, role) {
            for k in 0..n {
                let index = (first + k) % n;
                // SAFETY: as in release.
                let slot = unsafe { &*h.slot(index) };
                if swap_state(slot, FREE, FILLING) {
                    slot.role.store(role, Ordering::Relaxed);
                    HELD_SLOT.store(index as i64, Ordering::Relaxed);
                    return HeldSlot { h, index };
                }
            }
        }
        // No slot this role may take (more requests in flight than bge.server_slots, or the
        // last free ones are kept for other roles): poll, less often the longer it waits.
        super::wait(poll);
        poll = (poll * 2).min(Duration::from_millis(10));
        pgrx::check_for_interrupts!();
    }
}

/// Whether `role` may take a free slot now. The last free slots (a sixteenth of them, at least
/// one where there are four or more) are kept for roles holding fewer slots than a newcomer's
/// fair share would be, so that a role with many connections (or parallel workers) cannot hold
/// every slot while another role waits; a role alone still uses all but those few. The counts
/// are read without a lock: two backends of one role claiming at once may overshoot by one.
fn may_claim(h: &Header, role: u32) -> bool {
    let n = h.slot_count as usize;
    let reserve = if n >= 4 { (n / 16).max(1) } else { 0 };
    let (mut free, mut mine) = (0, 0);
    let mut roles: Vec<u32> = vec![role];
    for i in 0..n {
        // SAFETY: as in release; racy reads are fine for this heuristic.
        let slot = unsafe { &*h.slot(i) };
        if slot.state.load(Ordering::Acquire) == FREE {
            free += 1;
            continue;
        }
        let owner = slot.role.load(Ordering::Relaxed);
        if owner == role {
            mine += 1;
        } else if !roles.contains(&owner) {
            roles.push(owner);
        }
    }
    free > reserve || (free > 0 && mine < n / (roles.len() + 1))
}

fn round_trip(h: &Header, call: &Call, output: Output, encoded: &[Encoded]) -> Vec<Vec<u32>> {
    let held = claim(h);
    let index = held.index;
    // SAFETY: FILLING: this backend owns the slot's fields and buffer until SUBMITTED.
    let slot: &mut Slot = unsafe { &mut *h.slot(index) };
    let request = wire::encode_request(encoded);
    slot.request_id = h.next_request_id.fetch_add(1, Ordering::Relaxed);
    slot.epoch.store(0, Ordering::Relaxed);
    slot.output = output.to_byte();
    (slot.device, slot.precision) = call.target.to_bytes();
    slot.n_seqs = encoded.len() as u32;
    slot.n_tokens = encoded.iter().map(|e| e.ids.len()).sum::<usize>() as u32;
    put_str(&mut slot.model, &call.model);
    put_str(&mut slot.dir, &call.dir.to_string_lossy());
    // SAFETY: this process's pid and latch.
    unsafe {
        slot.owner_pid.store(pg_sys::MyProcPid, Ordering::Relaxed);
        slot.owner_latch.store(pg_sys::MyLatch, Ordering::Relaxed);
    }
    slot.request_words = request.len() as u64;
    let mut sent = send_piece(h, index, slot, &request, 0);

    let submitted = Instant::now();
    let mut words: Vec<u32> = Vec::new();
    loop {
        match slot.state.load(Ordering::Acquire) {
            SEND_MORE => {
                sent = send_piece(h, index, slot, &request, sent);
                continue;
            }
            RESULT => {
                if slot.failed {
                    let (code, message, hint) = (slot.sqlstate, get_str(&slot.message), get_str(&slot.hint));
                    drop(held);
                    raise_with(PgSqlErrorCode::from(code), message, &hint);
                }
                if words.is_empty() {
                    words.reserve_exact(slot.total_words as usize);
                }
                // SAFETY: RESULT: the worker wrote piece_words words into the buffer.
                words.extend_from_slice(unsafe { std::slice::from_raw_parts(h.buffer(index), slot.piece_words as usize) });
                if (slot.piece_offset + slot.piece_words) < slot.total_words {
                    slot.state.store(FETCH, Ordering::Release);
                    h.wake_worker();
                    continue;
                }
                drop(held);
                return wire::split_results(&words, encoded.len()).unwrap_or_else(|e| {
                    raise_with(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e, "This is a bug in pg_bge; please report it.")
                });
            }
            SUBMITTED if h.worker_pid.load(Ordering::Acquire) == 0 && submitted.elapsed() > WORKER_START_WAIT => {
                drop(held);
                raise_with(
                    PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                    format!("pg_bge's model server has not been running for {} s", WORKER_START_WAIT.as_secs()),
                    "The server log says why it stopped; SET bge.server = off computes in this session meanwhile.",
                );
            }
            // The worker stamps its epoch just after taking a request (0 until then).
            RUNNING | FETCH if lost(slot.epoch.load(Ordering::Acquire), h) => {
                drop(held);
                raise_with(
                    PgSqlErrorCode::ERRCODE_OPERATOR_INTERVENTION,
                    "pg_bge's model server exited while computing this request".into(),
                    "It restarts by itself within a second; run the statement again.",
                );
            }
            _ => {}
        }
        super::wait(POLL);
        pgrx::check_for_interrupts!();
    }
}

/// Writes the request's next piece (from word `sent`) and submits it; returns the words sent.
fn send_piece(h: &Header, index: usize, slot: &mut Slot, request: &[u32], sent: usize) -> usize {
    let n = (request.len() - sent).min(h.buffer_words());
    // SAFETY: this side owns the slot (FILLING or SEND_MORE); the buffer holds buffer_words.
    unsafe { std::ptr::copy_nonoverlapping(request[sent..].as_ptr(), h.buffer(index), n) };
    slot.request_offset = sent as u64;
    slot.request_piece = n as u64;
    slot.state.store(SUBMITTED, Ordering::Release);
    h.wake_worker();
    sent + n
}

/// Whether a request taken by the worker of `epoch` can no longer complete.
fn lost(epoch: u64, h: &Header) -> bool {
    h.worker_pid.load(Ordering::Acquire) == 0 || (epoch != 0 && epoch != h.epoch.load(Ordering::Acquire))
}
