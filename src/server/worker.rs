//! The model server's process: takes submitted requests from the slots, batches those for the
//! same model across connections (continuous batching: the next batch forms from whatever
//! waits when the last one finishes), runs them through the engine and hands the results back.
//! Only this process's main thread calls PostgreSQL; the engine's threads compute.
//!
//! Fairness: requests wait in one queue per role. Each batch (at most bge.max_batch_tokens
//! tokens, or one text where a single text is longer) is led by the next role in round-robin
//! order and shared out between the roles with requests for the same model copy and output,
//! and within a role between its requests; a request larger than its share is computed over
//! several batches. A role alone gets every batch whole. So one role's flood delays another
//! role's short request by about one batch.
//!
//! Memory: copies of models (one per model, precision and device) stay loaded until loading
//! another would take the server past bge.server_memory; the least recently used copies are
//! then dropped first.
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bge_engine::backend::{BackendKind, Precision};
use bge_engine::tokenize::Encoded;
use bge_engine::{Model, ModelStore, RunOptions};
use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

use super::{get_str, header, put_str, set_latch, swap_state, wire, Header, ModelEntry, Output, Slot, Target};
use super::{ABANDONED, FETCH, FREE, MAX_MODELS, RESULT, RUNNING, SEND_MORE, SUBMITTED};
use crate::gucs;
use crate::registry;

/// One backend's request, taken from its slot; computed over one batch or several.
struct Job {
    slot: usize,
    request_id: u64,
    role: u32,
    key: JobKey,
    /// Its sequences; those before `next` were handed to batches (and moved out).
    encoded: Vec<Encoded>,
    next: usize,
    /// Results of the first `done` sequences, `[count, count words]` each.
    words: Vec<u32>,
    done: usize,
}

/// A role's requests, in the order they are next served.
struct RoleQueue {
    role: u32,
    /// (slot, request id): a request abandoned meanwhile is skipped.
    jobs: VecDeque<(usize, u64)>,
}

/// The sequences of one request a batch computes.
struct Part {
    slot: usize,
    request_id: u64,
    seqs: usize,
}

struct Batch {
    key: JobKey,
    parts: Vec<Part>,
    encoded: Vec<Encoded>,
    /// The part each sequence of `encoded` belongs to: a request's sequences need not be
    /// contiguous (a later pass of next_batch may give it more).
    part_of_seq: Vec<usize>,
    tokens: usize,
}

/// A copy of a model the server holds, for the status table and eviction.
struct Copy {
    id: (PathBuf, String, BackendKind),
    /// Not kept alive by this table: the store owns the copy.
    model: Weak<Model>,
    entry: ModelEntry,
    /// What it counts for under bge.server_memory.
    bytes: u64,
    /// When a batch last used it (the server's batch count).
    used: u64,
}

/// Requests with equal keys share forward passes.
#[derive(Clone, PartialEq, Eq)]
struct JobKey {
    dir: PathBuf,
    model: String,
    target: Target,
    output: Output,
}

/// Unwinds a forward pass nobody waits for any more (cancel, statement_timeout, disconnect).
struct AllAbandoned;

/// A result larger than a slot's buffer, served piece by piece.
struct Pieces {
    request_id: u64,
    words: Vec<u32>,
    sent: usize,
}

struct Server {
    h: &'static Header,
    epoch: u64,
    stores: HashMap<PathBuf, ModelStore>,
    /// Requests taken and not yet answered, by slot.
    jobs: HashMap<usize, Job>,
    /// Roles with requests waiting; the front one leads the next batch.
    roles: VecDeque<RoleQueue>,
    pieces: HashMap<usize, Pieces>,
    /// Requests arriving in pieces, by slot: (request id, words so far).
    partial: HashMap<usize, (u64, Vec<u32>)>,
    /// The status table's rows.
    models: Vec<Copy>,
    /// Batches run since start (the clock of `Copy::used`).
    tick: u64,
}

#[pgrx::pg_guard]
#[no_mangle]
pub extern "C-unwind" fn bge_server_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(None, None);
    let h = header().expect("pg_bge model server started without its shared memory");
    // SAFETY: main thread; the callback runs on every exit path but a crash.
    unsafe { pg_sys::before_shmem_exit(Some(on_exit), pg_sys::Datum::from(0)) };
    // Requests a crashed predecessor held (waiting ones are served: they came after it).
    fail_taken(h, "pg_bge's model server restarted while computing this request", false);
    let epoch = h.epoch.fetch_add(1, Ordering::AcqRel) + 1;
    for counter in [&h.requests, &h.batches, &h.sequences, &h.tokens] {
        counter.store(0, Ordering::Relaxed);
    }
    publish_models(h, &[]);
    // SAFETY: plain calls and reads of this process's state.
    unsafe {
        h.started_at.store(pg_sys::GetCurrentTimestamp(), Ordering::Relaxed);
        h.worker_latch.store(pg_sys::MyLatch, Ordering::Release);
        h.worker_pid.store(pg_sys::MyProcPid, Ordering::Release);
    }
    // Backends never touch CUDA while the server runs: the probe is the worker's.
    h.gpu.store(if bge_engine::backend::cuda::available() { 2 } else { 1 }, Ordering::Release);
    pgrx::log!("pg_bge model server started ({} request slots of {} kB)", h.slot_count, h.slot_bytes / 1024);
    let mut server = Server {
        h,
        epoch,
        stores: HashMap::new(),
        jobs: HashMap::new(),
        roles: VecDeque::new(),
        pieces: HashMap::new(),
        partial: HashMap::new(),
        models: Vec::new(),
        tick: 0,
    };
    loop {
        // Interrupts as any connected process: ProcSignalBarriers (DROP DATABASE waits for every
        // process to absorb one), cancel (pg_cancel_backend: ERROR, so a restart).
        pgrx::check_for_interrupts!();
        exit_if_terminated();
        if BackgroundWorker::sighup_received() {
            // SAFETY: main thread, between requests.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        server.take_requests();
        match server.next_batch() {
            Some(batch) => server.run(batch),
            None => super::wait(Duration::from_secs(1)),
        }
    }
}

/// SIGTERM (shutdown, pg_terminate_backend): exit with code 1, which the postmaster answers by
/// restarting the worker a second later (unless it is shutting down); on_exit fails the
/// requests in flight.
fn exit_if_terminated() {
    if BackgroundWorker::sigterm_received() {
        // SAFETY: main thread; proc_exit runs the exit callbacks and does not return.
        unsafe { pg_sys::proc_exit(1) };
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_exit(_code: i32, _arg: pg_sys::Datum) {
    if let Some(h) = header() {
        h.worker_pid.store(0, Ordering::Release);
        h.worker_latch.store(std::ptr::null_mut(), Ordering::Release);
        fail_taken(h, "pg_bge's model server exited while computing this request", true);
    }
}

/// Fails every request taken, and with `waiting` those submitted but not yet taken (their
/// backends get the ERROR at once, not a hang); frees abandoned slots.
fn fail_taken(h: &Header, message: &str, waiting: bool) {
    for i in 0..h.slot_count as usize {
        // SAFETY: the slot array lives for the server's life.
        let slot = unsafe { &mut *h.slot(i) };
        let state = slot.state.load(Ordering::Acquire);
        match state {
            ABANDONED => {
                swap_state(slot, ABANDONED, FREE);
            }
            SUBMITTED if !waiting => {}
            SUBMITTED | RUNNING | FETCH if swap_state(slot, state, RUNNING) => {
                write_error(slot, PgSqlErrorCode::ERRCODE_OPERATOR_INTERVENTION, message, "It restarts by itself within a second; run the statement again.");
                finish(slot);
            }
            _ => {}
        }
    }
}

/// Fails a request for a reason that only a bug in pg_bge explains.
fn fail_bug(slot: &mut Slot, message: &str) {
    write_error(slot, PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, message, "This is a bug in pg_bge; please report it.");
    finish(slot);
}

fn write_error(slot: &mut Slot, code: PgSqlErrorCode, message: &str, hint: &str) {
    slot.failed = true;
    slot.sqlstate = code as i32;
    put_str(&mut slot.message, message);
    put_str(&mut slot.hint, hint);
}

/// RUNNING -> RESULT and wake the owner; a slot its owner abandoned meanwhile is freed.
fn finish(slot: &Slot) {
    if swap_state(slot, RUNNING, RESULT) {
        set_latch(slot.owner_latch.load(Ordering::Relaxed));
    } else {
        swap_state(slot, ABANDONED, FREE);
    }
}

/// The table bge_server_status() reads (seqlock: odd version while writing).
fn publish_models(h: &Header, models: &[ModelEntry]) {
    let h = h as *const Header as *mut Header;
    // SAFETY: only the worker writes the table; readers retry on a version change.
    unsafe {
        (*h).models_version.fetch_add(1, Ordering::AcqRel);
        let n = models.len().min(MAX_MODELS);
        for (i, m) in models[..n].iter().enumerate() {
            std::ptr::write_volatile(std::ptr::addr_of_mut!((*h).models[i]), *m);
        }
        (*h).model_count = n as u32;
        (*h).models_version.fetch_add(1, Ordering::AcqRel);
    }
}

impl Server {
    fn slot(&self, i: usize) -> &'static mut Slot {
        // SAFETY: the slot array lives for the server's life; the caller holds the slot's state.
        unsafe { &mut *self.h.slot(i) }
    }

    /// Takes newly submitted requests (in submission order), serves result pieces asked for,
    /// and frees slots abandoned since.
    fn take_requests(&mut self) {
        let mut taken = Vec::new();
        for i in 0..self.h.slot_count as usize {
            let slot = self.slot(i);
            match slot.state.load(Ordering::Acquire) {
                SUBMITTED if swap_state(slot, SUBMITTED, RUNNING) => {
                    slot.epoch.store(self.epoch, Ordering::Release);
                    // (Left set if a worker exited in the middle of a batch.)
                    slot.computing.store(0, Ordering::Relaxed);
                    self.pieces.remove(&i);
                    match self.receive_piece(i) {
                        Ok(None) => {
                            // More to come: the owner writes the next piece.
                            if swap_state(slot, RUNNING, SEND_MORE) {
                                set_latch(slot.owner_latch.load(Ordering::Relaxed));
                            } else {
                                swap_state(slot, ABANDONED, FREE);
                            }
                        }
                        Ok(Some(words)) => match self.read_job(i, &words) {
                            Ok(job) => taken.push(job),
                            Err(message) => fail_bug(slot, &message),
                        },
                        Err(message) => fail_bug(slot, &message),
                    }
                }
                FETCH if swap_state(slot, FETCH, RUNNING) => {
                    slot.epoch.store(self.epoch, Ordering::Release);
                    self.send_piece(i);
                }
                ABANDONED if swap_state(slot, ABANDONED, FREE) => {
                    self.pieces.remove(&i);
                    self.partial.remove(&i);
                    self.jobs.remove(&i);
                }
                _ => {}
            }
        }
        taken.sort_by_key(|j| j.request_id);
        for job in taken {
            let entry = (job.slot, job.request_id);
            match self.roles.iter_mut().find(|q| q.role == job.role) {
                Some(q) => q.jobs.push_back(entry),
                None => self.roles.push_back(RoleQueue { role: job.role, jobs: VecDeque::from([entry]) }),
            }
            self.jobs.insert(job.slot, job);
        }
    }

    /// Adds the piece in slot `i`'s buffer to its request; the whole request once complete.
    fn receive_piece(&mut self, i: usize) -> Result<Option<Vec<u32>>, String> {
        let slot = self.slot(i);
        let (total, offset, piece) = (slot.request_words as usize, slot.request_offset as usize, slot.request_piece as usize);
        if total != slot.n_seqs as usize + 2 * slot.n_tokens as usize || piece > self.h.buffer_words() || offset + piece > total {
            return Err(format!("model server request piece {offset}+{piece} of {total} words is malformed"));
        }
        if offset == 0 {
            self.partial.insert(i, (slot.request_id, Vec::with_capacity(total)));
        }
        let Some((_, words)) = self.partial.get_mut(&i).filter(|(id, w)| *id == slot.request_id && w.len() == offset) else {
            return Err("model server lost the start of a request".into());
        };
        // SAFETY: RUNNING: the worker owns the buffer; the backend wrote `piece` words.
        words.extend_from_slice(unsafe { std::slice::from_raw_parts(self.h.buffer(i), piece) });
        if offset + piece < total {
            return Ok(None);
        }
        Ok(self.partial.remove(&i).map(|(_, w)| w))
    }

    fn read_job(&self, i: usize, words: &[u32]) -> Result<Job, String> {
        let slot = self.slot(i);
        let encoded = wire::decode_request(words, slot.n_seqs as usize)?;
        let key = JobKey {
            dir: PathBuf::from(get_str(&slot.dir)),
            model: get_str(&slot.model),
            target: Target::from_bytes(slot.device, slot.precision)?,
            output: Output::from_byte(slot.output)?,
        };
        let role = slot.role.load(Ordering::Relaxed);
        Ok(Job { slot: i, request_id: slot.request_id, role, key, encoded, next: 0, words: Vec::new(), done: 0 })
    }

    /// Drops requests whose backends left (cancel, timeout, exit): they are not computed.
    fn prune(&mut self) {
        let h = self.h;
        self.jobs.retain(|&i, _| {
            // SAFETY: the slot array lives for the server's life.
            let slot = unsafe { &*h.slot(i) };
            !(slot.state.load(Ordering::Acquire) == ABANDONED && swap_state(slot, ABANDONED, FREE))
        });
        let jobs = &self.jobs;
        for q in self.roles.iter_mut() {
            q.jobs.retain(|(i, id)| jobs.get(i).is_some_and(|j| j.request_id == *id));
        }
        self.roles.retain(|q| !q.jobs.is_empty());
    }

    /// The next batch: led by the role at the front of the round-robin (its first request
    /// names the model copy and output), then shared out in passes between every role with
    /// requests for the same, each pass giving each role an equal share of the tokens left and
    /// each request of a role an equal share of its role's (at least an eighth of the batch,
    /// and at least one text). At most bge.max_batch_tokens tokens (shared by the number of
    /// roles waiting, up to four), but never less than one text. Requests that took part and are not done go to the back of their role's queue,
    /// and the leading role to the back of the round-robin.
    fn next_batch(&mut self) -> Option<Batch> {
        self.prune();
        let leader = self.roles.front()?;
        let key = self.jobs[&leader.jobs[0].0].key.clone();
        // With several roles waiting, shorter batches (down to a quarter): a role's request
        // that arrives meanwhile waits for less of the batch before it.
        let limit = (gucs::max_batch_tokens() / self.roles.len().min(4)).max(1);
        let mut budget = limit;
        let mut batch = Batch { key, parts: Vec::new(), encoded: Vec::new(), part_of_seq: Vec::new(), tokens: 0 };
        let mut part_of: HashMap<usize, usize> = HashMap::new();
        loop {
            let wanting = |q: &RoleQueue, jobs: &HashMap<usize, Job>| -> Vec<usize> {
                q.jobs.iter().map(|&(i, _)| i).filter(|i| jobs[i].key == batch.key && jobs[i].next < jobs[i].encoded.len()).collect()
            };
            let active: Vec<usize> = (0..self.roles.len()).filter(|&r| !wanting(&self.roles[r], &self.jobs).is_empty()).collect();
            if active.is_empty() || budget == 0 {
                break;
            }
            let role_share = (budget / active.len()).max(1);
            let mut progress = false;
            'roles: for r in active {
                let mine = wanting(&self.roles[r], &self.jobs);
                let quantum = (role_share / mine.len()).max(role_share.min(limit / 8)).max(1);
                let mut given_role = 0;
                for i in mine {
                    let job = self.jobs.get_mut(&i).expect("queued job");
                    let mut given = 0;
                    while job.next < job.encoded.len() {
                        let len = job.encoded[job.next].ids.len();
                        if !batch.encoded.is_empty() && len > budget {
                            continue 'roles;
                        }
                        if given > 0 && given + len > quantum {
                            break;
                        }
                        batch.encoded.push(std::mem::replace(&mut job.encoded[job.next], Encoded { ids: Vec::new(), type_ids: Vec::new() }));
                        job.next += 1;
                        given += len;
                        given_role += len;
                        budget = budget.saturating_sub(len);
                        batch.tokens += len;
                        progress = true;
                        let at = *part_of.entry(i).or_insert_with(|| {
                            batch.parts.push(Part { slot: i, request_id: job.request_id, seqs: 0 });
                            batch.parts.len() - 1
                        });
                        batch.parts[at].seqs += 1;
                        batch.part_of_seq.push(at);
                        if given_role >= role_share {
                            continue 'roles;
                        }
                    }
                }
            }
            if !progress {
                break;
            }
        }
        for q in self.roles.iter_mut() {
            let (took, rest): (Vec<_>, Vec<_>) = q.jobs.iter().partition(|(i, _)| part_of.contains_key(i));
            q.jobs = rest.into_iter().chain(took).collect();
        }
        self.roles.rotate_left(1);
        Some(batch)
    }

    fn run(&mut self, batch: Batch) {
        let Batch { key, parts, encoded, part_of_seq, tokens } = batch;
        let slot_indexes: Vec<usize> = parts.iter().map(|p| p.slot).collect();
        for &i in &slot_indexes {
            self.slot(i).computing.store(1, Ordering::Relaxed);
        }
        // A panic in the engine (a bug) fails this batch, not the server.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.compute(&key, &encoded, &slot_indexes)));
        for &i in &slot_indexes {
            self.slot(i).computing.store(0, Ordering::Relaxed);
        }
        let h = self.h;
        h.batches.fetch_add(1, Ordering::Relaxed);
        h.sequences.fetch_add(encoded.len() as u64, Ordering::Relaxed);
        h.tokens.fetch_add(tokens as u64, Ordering::Relaxed);
        match outcome {
            Ok(Ok(per_seq)) => {
                // Each part's results in its request's order (the batch's order within a part).
                let mut per_part: Vec<Vec<Vec<u32>>> = parts.iter().map(|p| Vec::with_capacity(p.seqs)).collect();
                for (values, &at) in per_seq.into_iter().zip(&part_of_seq) {
                    per_part[at].push(values);
                }
                for (part, results) in parts.into_iter().zip(per_part) {
                    // A request abandoned (and its slot freed) while the batch ran is gone.
                    let Some(job) = self.jobs.get_mut(&part.slot).filter(|j| j.request_id == part.request_id) else {
                        continue;
                    };
                    for values in results {
                        wire::append_result(&mut job.words, &values);
                    }
                    job.done += part.seqs;
                    if job.done == job.encoded.len() {
                        let job = self.jobs.remove(&part.slot).expect("job");
                        h.requests.fetch_add(1, Ordering::Relaxed);
                        self.pieces.insert(part.slot, Pieces { request_id: job.request_id, words: job.words, sent: 0 });
                        self.send_piece(part.slot);
                    }
                }
            }
            Ok(Err(e)) => {
                for slot in self.take_jobs(&parts) {
                    write_error(slot, crate::errors::sqlstate(e.kind()), &e.to_string(), &e.hint().unwrap_or_default());
                    finish(slot);
                }
            }
            Err(panic) if panic.is::<AllAbandoned>() => {
                for slot in self.take_jobs(&parts) {
                    finish(slot);
                }
            }
            Err(panic) => {
                let what = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
                for slot in self.take_jobs(&parts) {
                    write_error(slot, PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, &format!("pg_bge's model server failed: {what}"), "This is a bug in pg_bge; please report it.");
                    finish(slot);
                }
            }
        }
    }

    /// Removes the requests of a failed batch from the queues; their slots, to be answered.
    fn take_jobs(&mut self, parts: &[Part]) -> Vec<&'static mut Slot> {
        let mut slots = Vec::new();
        for part in parts {
            if self.jobs.get(&part.slot).is_some_and(|j| j.request_id == part.request_id) {
                self.jobs.remove(&part.slot);
                slots.push(self.slot(part.slot));
            }
        }
        slots
    }

    /// Writes the next piece of slot `i`'s result into its buffer and hands it over.
    fn send_piece(&mut self, i: usize) {
        let slot = self.slot(i);
        let capacity = self.h.buffer_words();
        let Some(p) = self.pieces.get_mut(&i).filter(|p| p.request_id == slot.request_id) else {
            fail_bug(slot, "model server lost a result");
            return;
        };
        let n = (p.words.len() - p.sent).min(capacity);
        // SAFETY: RUNNING: the worker owns the buffer of `capacity` words.
        unsafe { std::ptr::copy_nonoverlapping(p.words[p.sent..].as_ptr(), self.h.buffer(i), n) };
        slot.failed = false;
        slot.total_words = p.words.len() as u64;
        slot.piece_offset = p.sent as u64;
        slot.piece_words = n as u64;
        p.sent += n;
        if p.sent == p.words.len() {
            self.pieces.remove(&i);
        }
        finish(slot);
    }

    /// Per sequence, its result's words (wire.rs).
    fn compute(&mut self, key: &JobKey, encoded: &[Encoded], slots: &[usize]) -> bge_engine::Result<Vec<Vec<u32>>> {
        let model = self.model(key)?;
        for e in encoded {
            if e.ids.len() > model.spec.max_seq_length || e.ids.iter().any(|&id| id as usize >= model.spec.vocab_size) {
                return Err(bge_engine::Error::Internal("model server got token ids the model cannot take (was the model replaced?)".into()));
            }
        }
        let opts = RunOptions { truncate: true, threads: gucs::server_threads(), max_batch_tokens: gucs::max_batch_tokens() };
        // Between layers: exit on SIGTERM; stop a batch whose every backend has left.
        let h = self.h;
        let mut interrupt = || {
            exit_if_terminated();
            pgrx::check_for_interrupts!();
            if slots.iter().all(|&i| unsafe { &*h.slot(i) }.state.load(Ordering::Acquire) == ABANDONED) {
                std::panic::resume_unwind(Box::new(AllAbandoned));
            }
        };
        Ok(match key.output {
            Output::Dense => model.embed_encoded(encoded, &opts, &mut interrupt)?.iter().map(|v| wire::dense_words(v)).collect(),
            Output::Sparse => model.sparse_encoded(encoded, &opts, &mut interrupt)?.iter().map(wire::sparse_words).collect(),
            Output::Colbert => model.colbert_encoded(encoded, &opts, &mut interrupt)?.iter().map(wire::colbert_words).collect(),
            Output::Score => model.score_encoded(encoded, &opts, &mut interrupt)?.into_iter().map(wire::score_words).collect(),
        })
    }

    /// The model a key names, loaded on first use; a copy not in the status table yet (new, or
    /// reloaded after its files changed) enters it. Under bge.server_memory, the least recently
    /// used other copies are dropped before a load (to make room for its estimated size) and
    /// after it (for its measured size).
    fn model(&mut self, key: &JobKey) -> bge_engine::Result<Arc<Model>> {
        self.tick += 1;
        let budget = gucs::server_memory_bytes();
        // Copies the store let go of (it reloads a copy whose weight file changed).
        let before = self.models.len();
        self.models.retain(|c| c.model.strong_count() > 0);
        let mut changed = self.models.len() != before;
        let store = self.stores.entry(key.dir.clone()).or_insert_with(|| ModelStore::new(key.dir.clone()));
        let loading = !loaded_for(store, key);
        let estimate = if loading { estimate_bytes(&key.dir.join(&key.model), key.target) } else { 0 };
        if loading {
            if let Some(budget) = budget {
                changed |= self.evict(budget.saturating_sub(estimate), None);
            }
            // What the load's growth of this process measures is then this copy alone.
            ModelStore::trim_heap();
        }
        let store = self.stores.get_mut(&key.dir).expect("store");
        let resolved = registry::resolve(store, &key.model, key.target);
        let model = match resolved {
            Ok(model) => model,
            Err(e) => {
                if changed {
                    self.publish();
                }
                return Err(e);
            }
        };
        let id = (key.dir.clone(), key.model.clone(), model.backend);
        match self.models.iter_mut().find(|c| c.id == id && std::ptr::eq(c.model.as_ptr(), Arc::as_ptr(&model))) {
            Some(copy) => copy.used = self.tick,
            None => {
                let mut entry = ModelEntry {
                    dir: [0; super::DIR_BYTES],
                    name: [0; super::NAME_BYTES],
                    device: [0; 16],
                    isa: [0; 16],
                    precision: [0; 16],
                    resident_bytes: model.resident_bytes,
                    load_ms: model.load_time.as_secs_f64() * 1e3,
                };
                put_str(&mut entry.dir, &key.dir.to_string_lossy());
                put_str(&mut entry.name, &key.model);
                put_str(&mut entry.device, model.backend.name());
                put_str(&mut entry.isa, model.isa.unwrap_or(""));
                put_str(&mut entry.precision, model.precision);
                // Without /proc/self/statm the load measured nothing: count the estimate.
                let bytes = if model.resident_bytes > 0 { model.resident_bytes } else { estimate };
                self.models.retain(|c| c.id != id);
                self.models.push(Copy { id, model: Arc::downgrade(&model), entry, bytes, used: self.tick });
                changed = true;
            }
        }
        if let Some(budget) = budget {
            changed |= self.evict(budget, Some(&model));
        }
        if changed {
            self.publish();
        }
        Ok(model)
    }

    /// Drops the least recently used copies but `keep` until the others take at most `budget`
    /// bytes; whether it dropped any. A copy a batch still holds is freed when that batch ends.
    fn evict(&mut self, budget: u64, keep: Option<&Arc<Model>>) -> bool {
        let mut dropped = false;
        loop {
            let total: u64 = self.models.iter().map(|c| c.bytes).sum();
            if total <= budget {
                return dropped;
            }
            let kept = keep.map_or(std::ptr::null(), Arc::as_ptr);
            let Some(victim) = self.models.iter().enumerate().filter(|(_, c)| !std::ptr::eq(c.model.as_ptr(), kept)).min_by_key(|(_, c)| c.used).map(|(i, _)| i) else {
                return dropped;
            };
            let copy = self.models.remove(victim);
            let (dir, name, backend) = &copy.id;
            if let Some(store) = self.stores.get_mut(dir) {
                store.unload(name, *backend);
            }
            pgrx::debug1!("pg_bge model server dropped {name} ({}, {} MB) under bge.server_memory", backend.name(), copy.bytes >> 20);
            dropped = true;
        }
    }

    /// Rewrites the table bge_server_status() reads.
    fn publish(&self) {
        let table: Vec<ModelEntry> = self.models.iter().map(|c| c.entry).collect();
        publish_models(self.h, &table);
    }
}

/// Whether the store already holds the copy `key` asks for (as registry::resolve would pick
/// it; a copy whose weight file changed counts, though it is loaded again).
fn loaded_for(store: &ModelStore, key: &JobKey) -> bool {
    registry::backends(key.target).into_iter().any(|b| store.loaded_on(&key.model, b).is_some())
}

/// What loading the copy for `target` of the model in `dir` may take before it is measured:
/// its weight files' size (links followed), halved for 16-bit and quartered for 8-bit weights (exact for the
/// usual fp32 checkpoints; the measurement after the load corrects it).
fn estimate_bytes(dir: &std::path::Path, target: Target) -> u64 {
    let files: u64 = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
                .filter_map(|e| std::fs::metadata(e.path()).ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    let gpu = match registry::backends(target).as_slice() {
        [BackendKind::Cuda] => true,
        [BackendKind::Cuda, _] => bge_engine::backend::cuda::available(),
        _ => false,
    };
    match target.precision {
        _ if gpu => files / 2,
        Precision::Bf16 => files / 2,
        Precision::Int8 => files / 4,
        Precision::Fp32 => files,
    }
}
