//! The model server's process: takes submitted requests from the slots, batches those for the
//! same model across connections (continuous batching: the next batch forms from whatever
//! waits when the last one finishes), runs them through the engine and hands the results back.
//! Only this process's main thread calls PostgreSQL; the engine's threads compute.
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bge_engine::backend::BackendKind;
use bge_engine::tokenize::Encoded;
use bge_engine::{Model, ModelStore, RunOptions};
use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

use super::{get_str, header, put_str, set_latch, swap_state, Header, ModelEntry, Output, Slot, Target};
use super::{ABANDONED, FETCH, FREE, MAX_MODELS, RESULT, RUNNING, SEND_MORE, SUBMITTED};
use crate::gucs::{self, Device};
use crate::registry;

/// One backend's request, taken from its slot.
struct Job {
    slot: usize,
    request_id: u64,
    key: JobKey,
    encoded: Vec<Encoded>,
    tokens: usize,
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
    queue: VecDeque<Job>,
    pieces: HashMap<usize, Pieces>,
    /// Requests arriving in pieces, by slot: (request id, words so far).
    partial: HashMap<usize, (u64, Vec<u32>)>,
    /// The status table's rows: which copy each describes (not kept alive by it).
    models: Vec<((PathBuf, String, BackendKind), Weak<Model>, ModelEntry)>,
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
    let mut server = Server { h, epoch, stores: HashMap::new(), queue: VecDeque::new(), pieces: HashMap::new(), partial: HashMap::new(), models: Vec::new() };
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
                }
                _ => {}
            }
        }
        taken.sort_by_key(|j| j.request_id);
        self.queue.extend(taken);
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
        let (n, tokens) = (slot.n_seqs as usize, slot.n_tokens as usize);
        let (lens, rest) = words.split_at(n);
        let (ids, type_ids) = rest.split_at(tokens);
        if lens.iter().map(|&l| l as usize).sum::<usize>() != tokens {
            return Err("model server request lengths do not add up".into());
        }
        let mut encoded = Vec::with_capacity(n);
        let mut at = 0;
        for &len in lens {
            let r = at..at + len as usize;
            encoded.push(Encoded { ids: ids[r.clone()].to_vec(), type_ids: type_ids[r].to_vec() });
            at += len as usize;
        }
        let output = match slot.output {
            0 => Output::Dense,
            1 => Output::Sparse,
            2 => Output::Colbert,
            o => return Err(format!("unknown model server output {o}")),
        };
        let device = match slot.device {
            d if d == Device::Auto as u8 => Device::Auto,
            d if d == Device::Cpu as u8 => Device::Cpu,
            d if d == Device::Cuda as u8 => Device::Cuda,
            d => return Err(format!("unknown model server device {d}")),
        };
        let cpu = match slot.cpu {
            c if c == BackendKind::CpuBf16 as u8 => BackendKind::CpuBf16,
            c if c == BackendKind::CpuInt8 as u8 => BackendKind::CpuInt8,
            _ => BackendKind::Cpu,
        };
        let key = JobKey { dir: PathBuf::from(get_str(&slot.dir)), model: get_str(&slot.model), target: Target { device, cpu }, output };
        Ok(Job { slot: i, request_id: slot.request_id, key, encoded, tokens })
    }

    /// The oldest request and the others waiting for the same model and output, up to
    /// bge.max_batch_tokens (the oldest alone may be larger: the engine splits it).
    fn next_batch(&mut self) -> Option<Vec<Job>> {
        // Requests whose backends left (cancel, timeout) are not computed.
        self.queue.retain(|job| {
            let slot = unsafe { &*self.h.slot(job.slot) };
            !(slot.state.load(Ordering::Acquire) == ABANDONED && swap_state(slot, ABANDONED, FREE))
        });
        let first = self.queue.pop_front()?;
        let limit = gucs::max_batch_tokens().max(first.tokens);
        let mut tokens = first.tokens;
        let mut batch = vec![first];
        let mut rest = VecDeque::with_capacity(self.queue.len());
        for job in self.queue.drain(..) {
            if job.key == batch[0].key && tokens + job.tokens <= limit {
                tokens += job.tokens;
                batch.push(job);
            } else {
                rest.push_back(job);
            }
        }
        self.queue = rest;
        Some(batch)
    }

    fn run(&mut self, batch: Vec<Job>) {
        let key = batch[0].key.clone();
        let counts: Vec<usize> = batch.iter().map(|j| j.encoded.len()).collect();
        let tokens: usize = batch.iter().map(|j| j.tokens).sum();
        let slots: Vec<(usize, u64)> = batch.iter().map(|j| (j.slot, j.request_id)).collect();
        let encoded: Vec<Encoded> = batch.into_iter().flat_map(|j| j.encoded).collect();
        // A panic in the engine (a bug) fails this batch, not the server.
        let slot_indexes: Vec<usize> = slots.iter().map(|&(i, _)| i).collect();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.compute(&key, &encoded, &slot_indexes)));
        let h = self.h;
        h.requests.fetch_add(slots.len() as u64, Ordering::Relaxed);
        h.batches.fetch_add(1, Ordering::Relaxed);
        h.sequences.fetch_add(encoded.len() as u64, Ordering::Relaxed);
        h.tokens.fetch_add(tokens as u64, Ordering::Relaxed);
        match outcome {
            Ok(Ok(per_seq)) => {
                let mut per_seq = per_seq.into_iter();
                for ((slot, request_id), n) in slots.into_iter().zip(counts) {
                    let mut words = Vec::new();
                    for values in per_seq.by_ref().take(n) {
                        words.push(values.len() as u32);
                        words.extend(values);
                    }
                    self.pieces.insert(slot, Pieces { request_id, words, sent: 0 });
                    self.send_piece(slot);
                }
            }
            Ok(Err(e)) => {
                for (slot, _) in slots {
                    let s = self.slot(slot);
                    write_error(s, crate::errors::sqlstate(e.kind()), &e.to_string(), &e.hint().unwrap_or_default());
                    finish(s);
                }
            }
            Err(panic) if panic.is::<AllAbandoned>() => {
                for (slot, _) in slots {
                    finish(self.slot(slot));
                }
            }
            Err(panic) => {
                let what = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
                for (slot, _) in slots {
                    let s = self.slot(slot);
                    write_error(s, PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, &format!("pg_bge's model server failed: {what}"), "This is a bug in pg_bge; please report it.");
                    finish(s);
                }
            }
        }
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

    /// Per sequence, the result as 32-bit words: dense and ColBERT f32 bits (ColBERT's width
    /// first), sparse (id, weight bits) pairs.
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
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
        Ok(match key.output {
            Output::Dense => model.embed_encoded(encoded, &opts, &mut interrupt)?.iter().map(|v| bits(v)).collect(),
            Output::Sparse => model
                .sparse_encoded(encoded, &opts, &mut interrupt)?
                .iter()
                .map(|s| s.weights.iter().flat_map(|&(id, w)| [id, w.to_bits()]).collect())
                .collect(),
            Output::Colbert => model
                .colbert_encoded(encoded, &opts, &mut interrupt)?
                .iter()
                .map(|c| std::iter::once(c.dim as u32).chain(c.data.iter().map(|x| x.to_bits())).collect())
                .collect(),
        })
    }

    /// The model a key names, loaded on first use; a copy not in the status table yet (new, or
    /// reloaded after its files changed) enters it.
    fn model(&mut self, key: &JobKey) -> bge_engine::Result<Arc<Model>> {
        let store = self.stores.entry(key.dir.clone()).or_insert_with(|| ModelStore::new(key.dir.clone()));
        let model = registry::resolve(store, &key.model, key.target.device, key.target.cpu)?;
        let id = (key.dir.clone(), key.model.clone(), model.backend);
        if !self.models.iter().any(|(k, copy, _)| *k == id && copy.ptr_eq(&Arc::downgrade(&model))) {
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
            self.models.retain(|(k, _, _)| *k != id);
            self.models.push((id, Arc::downgrade(&model), entry));
            let table: Vec<ModelEntry> = self.models.iter().map(|(_, _, e)| *e).collect();
            publish_models(self.h, &table);
        }
        Ok(model)
    }
}
