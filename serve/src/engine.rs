//! Every call bge-serve makes into bge-engine lives here: loading the model directories,
//! tokenising, and the one engine thread that runs forward passes for all requests
//! (continuous batching), embedding texts or scoring a reranker's (query, passage) pairs.
//!
//! Why one thread: the engine's CPU kernels already use every core through their rayon pool, so
//! two passes at once would only fight over the cores. Instead the thread drains a shared queue
//! and packs the inputs of many requests into each pass, up to `max_batch_tokens` tokens. A row's
//! vector does not depend on its batch (the kernels guarantee it), so a request gets bitwise what
//! `bge_embed(text, model)` gives in SQL whoever else it was batched with. A pass holds the work
//! of one model and one kind (embedding or scoring); a pair's score likewise does not depend on
//! its batch, so it is bitwise `bge_rerank(query, passage, model)`.
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use bge_engine::backend::{BackendKind, Precision};
use bge_engine::config::ModelKind;
use bge_engine::error::ErrorKind;
use bge_engine::tokenize::Encoded;
use bge_engine::{Model, RunOptions, TextRole};
use tokio::sync::oneshot;

use crate::metrics::Metrics;

/// Where models compute (`--device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda,
    /// The GPU when one works, else the CPU (as `bge.device = auto`).
    Auto,
}

/// A model directory that is served.
pub struct ServedModel {
    /// The directory's name: the model's canonical name, as in SQL.
    pub name: String,
    /// An embedder (the embedding routes) or a reranker (`/rerank`).
    pub kind: ModelKind,
    /// An embedding's length (a reranker's hidden size, which /health does not show).
    pub dimensions: usize,
    /// max_seq_length: longer inputs are truncated (as `bge_embed(text, model)`).
    pub max_tokens: usize,
    pub vocab_size: usize,
    /// "cpu", "cpu-bf16", "cpu-int8" or "cuda".
    pub backend: &'static str,
    pub precision: &'static str,
    model: Arc<Model>,
    /// The special tokens the tokenizer puts around a text ([CLS] … [SEP] for BERT): token-array
    /// inputs get the same.
    special_prefix: Vec<u32>,
    special_suffix: Vec<u32>,
}

/// A model directory that could not be loaded: logged, shown by /health, not served.
#[derive(Debug, Clone)]
pub struct LoadFailure {
    pub directory: String,
    pub error: String,
}

/// Loads every model directory in `dir` (each subdirectory with a config.json). A directory that
/// fails to load (bad files, a panic in the loader) becomes a [`LoadFailure`]; only an unreadable
/// `dir` is an error.
pub fn load_models(dir: &Path, device: Device, precision: Precision) -> Result<(Vec<Arc<ServedModel>>, Vec<LoadFailure>), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read model directory {}: {e}", dir.display()))?;
    let mut dirs: Vec<(String, PathBuf)> = Vec::new();
    let mut failed = Vec::new();
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if !path.join("config.json").is_file() {
            eprintln!("bge-serve: skipping {}: no config.json (not a model directory)", path.display());
            continue;
        }
        if !bge_engine::store::valid_name(&name) {
            failed.push(LoadFailure { directory: name, error: "a model name may hold only letters, digits, '.', '_' and '-'".into() });
            continue;
        }
        dirs.push((name, path));
    }
    dirs.sort();
    let mut models = Vec::new();
    for (name, path) in dirs {
        let started = Instant::now();
        match catch_unwind(|| load_one(&name, &path, device, precision)) {
            Ok(Ok(m)) => {
                let shape = match m.kind {
                    ModelKind::Embedder => format!("{} dimensions", m.dimensions),
                    ModelKind::Reranker => "reranker".to_string(),
                };
                eprintln!(
                    "bge-serve: loaded {} ({shape}, {} tokens, {} {}) in {:.1}s",
                    m.name,
                    m.max_tokens,
                    m.backend,
                    m.precision,
                    started.elapsed().as_secs_f64()
                );
                models.push(Arc::new(m));
            }
            Ok(Err(error)) => {
                eprintln!("bge-serve: cannot load {}: {error}", path.display());
                // /health shows paths relative to the model directory, not the server's layout.
                let error = error.replace(&format!("{}/", dir.display()), "");
                failed.push(LoadFailure { directory: name, error });
            }
            Err(_) => {
                eprintln!("bge-serve: loading {} panicked; skipped", path.display());
                failed.push(LoadFailure { directory: name, error: "the loader panicked".into() });
            }
        }
    }
    Ok((models, failed))
}

fn load_one(name: &str, dir: &Path, device: Device, precision: Precision) -> Result<ServedModel, String> {
    let cpu = BackendKind::cpu(precision);
    let model = match device {
        Device::Cpu => Model::load(name, dir, cpu),
        Device::Cuda => Model::load(name, dir, BackendKind::Cuda),
        Device::Auto if bge_engine::backend::cuda::available() => match Model::load(name, dir, BackendKind::Cuda) {
            // Kernels that do not cover this model: the CPU, as bge.device = auto does.
            Err(bge_engine::Error::DeviceUnavailable(_)) => Model::load(name, dir, cpu),
            other => other,
        },
        Device::Auto => Model::load(name, dir, cpu),
    }
    .map_err(|e| e.to_string())?;
    let (special_prefix, special_suffix) = special_tokens(&model)?;
    Ok(ServedModel {
        name: name.to_string(),
        kind: model.spec.kind,
        dimensions: model.spec.dimensions(),
        max_tokens: model.spec.max_seq_length,
        vocab_size: model.spec.vocab_size,
        backend: model.backend.name(),
        precision: model.precision,
        model: Arc::new(model),
        special_prefix,
        special_suffix,
    })
}

/// The special tokens the tokenizer adds around any text: the tokens of "" are all special;
/// those a text's tokens share at the start are the prefix, the rest the suffix.
fn special_tokens(model: &Model) -> Result<(Vec<u32>, Vec<u32>), String> {
    let empty = model.tokenizer.encode("", true).map_err(|e| e.to_string())?.ids;
    let text = model.tokenizer.encode("hello world", true).map_err(|e| e.to_string())?.ids;
    let shared = empty.iter().zip(&text).take_while(|(a, b)| a == b).count();
    let (prefix, suffix) = empty.split_at(shared);
    if !text.ends_with(suffix) || text.len() < empty.len() {
        return Err("cannot tell the tokenizer's special tokens apart (token-array input needs them)".into());
    }
    Ok((prefix.to_vec(), suffix.to_vec()))
}

impl ServedModel {
    /// Tokens of `texts` exactly as `bge_embed(text, model)` makes them: the model's passage
    /// prompt if it has one, truncated to max_seq_length. A panic in the tokenizer is an error.
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Encoded>, String> {
        catch_unwind(AssertUnwindSafe(|| self.model.encode_all(texts, TextRole::Passage, true, &mut || {})))
            .unwrap_or_else(|_| Err(bge_engine::Error::Tokenizer("the tokenizer panicked".into())))
            .map_err(|e| e.to_string())
    }

    /// A reranker's (query, passage) pairs tokenised as `bge_rerank(query, passage, model)` and
    /// FlagReranker do (the pair cut to max_seq_length). A panic in the tokenizer is an error.
    pub fn tokenize_pairs(&self, query: &str, passages: &[&str]) -> Result<Vec<Encoded>, String> {
        catch_unwind(AssertUnwindSafe(|| self.model.encode_pairs(query, passages, &mut || {})))
            .unwrap_or_else(|_| Err(bge_engine::Error::Tokenizer("the tokenizer panicked".into())))
            .map_err(|e| e.to_string())
    }

    /// A token-array input: the ids as given, between the model's special tokens, truncated
    /// like a text to max_seq_length. Ids must be below the vocabulary size.
    pub fn wrap_token_ids(&self, ids: &[u32]) -> Encoded {
        let room = self.max_tokens.saturating_sub(self.special_prefix.len() + self.special_suffix.len());
        let content = &ids[..ids.len().min(room)];
        let mut all = Vec::with_capacity(self.special_prefix.len() + content.len() + self.special_suffix.len());
        all.extend_from_slice(&self.special_prefix);
        all.extend_from_slice(content);
        all.extend_from_slice(&self.special_suffix);
        Encoded { type_ids: vec![0; all.len()], ids: all }
    }
}

/// Why a request's inputs were not computed.
#[derive(Debug, Clone)]
pub enum EngineFailure {
    /// The engine refused the request's inputs or model as invalid for this use (its
    /// `ErrorKind::InvalidParameter` or `InputTooLong`): the client's mistake, a 400.
    Refused(String),
    /// The engine returned any other error.
    Error(String),
    /// The engine panicked on a pass holding this request's inputs.
    Panic,
    /// The server is shutting down and no longer takes work.
    ShuttingDown,
}

/// What a request asks of its inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Each input's embedding.
    Embed,
    /// Each (query, passage) pair's relevance logit, as a one-value vector.
    Score,
}

/// What a request waits on: its vectors in input order (a score is a one-value vector), or why
/// there are none.
pub type Reply = oneshot::Receiver<Result<Vec<Vec<f32>>, EngineFailure>>;

/// The queue is full: the client should come back later.
#[derive(Debug)]
pub struct QueueFull;

struct Job {
    model: Arc<ServedModel>,
    work: Work,
    inputs: Vec<Encoded>,
    /// Inputs before this index were handed to a pass already.
    next: usize,
    results: Vec<Vec<f32>>,
    reply: oneshot::Sender<Result<Vec<Vec<f32>>, EngineFailure>>,
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<Job>,
    closed: bool,
}

/// The queue the HTTP handlers feed and the engine thread drains.
pub struct Batcher {
    state: Mutex<QueueState>,
    wake: Condvar,
    /// Requests accepted and not yet answered (queued or in a pass): the bound for 429.
    pending: AtomicUsize,
    max_pending: usize,
    options: RunOptions,
    metrics: Arc<Metrics>,
}

impl Batcher {
    /// The queue and its engine thread; `max_pending` requests may wait or compute at once.
    pub fn start(max_batch_tokens: usize, max_pending: usize, metrics: Arc<Metrics>) -> (Arc<Batcher>, std::thread::JoinHandle<()>) {
        let batcher = Arc::new(Batcher {
            state: Mutex::new(QueueState::default()),
            wake: Condvar::new(),
            pending: AtomicUsize::new(0),
            max_pending,
            // What bge_embed(text, model) uses: always truncate; threads and batch size do not
            // change a row's result.
            options: RunOptions { truncate: true, threads: 0, max_batch_tokens },
            metrics,
        });
        let worker = batcher.clone();
        let handle = std::thread::Builder::new().name("bge-engine".into()).spawn(move || worker.run()).expect("spawn the engine thread");
        (batcher, handle)
    }

    /// Queues `inputs` for `model`; the receiver gets their vectors (or scores) in order.
    /// Dropping the receiver (the client went away) cancels what has not been computed yet.
    pub fn submit(&self, model: Arc<ServedModel>, work: Work, inputs: Vec<Encoded>) -> Result<Reply, QueueFull> {
        let (reply, receiver) = oneshot::channel();
        if inputs.is_empty() {
            let _ = reply.send(Ok(Vec::new()));
            return Ok(receiver);
        }
        let mut state = lock(&self.state);
        if state.closed {
            let _ = reply.send(Err(EngineFailure::ShuttingDown));
            return Ok(receiver);
        }
        if self.pending.load(Ordering::SeqCst) >= self.max_pending {
            self.metrics.queue_rejections.fetch_add(1, Ordering::Relaxed);
            return Err(QueueFull);
        }
        self.pending.fetch_add(1, Ordering::SeqCst);
        let results = Vec::with_capacity(inputs.len());
        state.jobs.push_back(Job { model, work, inputs, next: 0, results, reply });
        self.metrics.queue_depth.store(state.jobs.len() as u64, Ordering::Relaxed);
        drop(state);
        self.wake.notify_one();
        Ok(receiver)
    }

    /// Requests accepted and not yet answered.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// Stops the engine thread once the queue is empty; later submissions are refused.
    pub fn close(&self) {
        lock(&self.state).closed = true;
        self.wake.notify_all();
    }

    fn run(&self) {
        while let Some(mut pass) = self.next_pass() {
            self.compute(&mut pass);
            let mut state = lock(&self.state);
            // Finished jobs are answered; unfinished ones go to the back, so that requests
            // behind a large one get a pass in between.
            for mut job in pass.jobs.drain(..) {
                if job.next < job.inputs.len() {
                    state.jobs.push_back(job);
                } else {
                    let results = std::mem::take(&mut job.results);
                    self.finish(job, Ok(results));
                }
            }
            self.metrics.queue_depth.store(state.jobs.len() as u64, Ordering::Relaxed);
        }
    }

    /// Answers a job and counts it off.
    fn finish(&self, job: Job, result: Result<Vec<Vec<f32>>, EngineFailure>) {
        // Counted off first, so that a client that got its answer never sees itself pending.
        self.pending.fetch_sub(1, Ordering::SeqCst);
        let _ = job.reply.send(result);
    }

    /// Waits for work and takes the next pass: inputs of the first waiting job's model, from
    /// the jobs in queue order, up to the token budget (a first input longer than the budget
    /// runs alone). None once closed and drained.
    fn next_pass(&self) -> Option<Pass> {
        let mut state = lock(&self.state);
        loop {
            // Clients that went away: their remaining inputs are not computed.
            let (gone, kept): (Vec<Job>, Vec<Job>) = state.jobs.drain(..).partition(|j| j.reply.is_closed());
            state.jobs = kept.into();
            for _job in gone {
                self.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
                self.pending.fetch_sub(1, Ordering::SeqCst);
            }
            if !state.jobs.is_empty() {
                break;
            }
            if state.closed {
                return None;
            }
            state = self.wake.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        let model = state.jobs[0].model.clone();
        let work = state.jobs[0].work;
        let budget = self.options.max_batch_tokens.max(1);
        let mut pass = Pass { model: model.clone(), work, jobs: Vec::new(), inputs: Vec::new(), owners: Vec::new(), tokens: 0 };
        let mut index = 0;
        while index < state.jobs.len() {
            if !Arc::ptr_eq(&state.jobs[index].model, &model) || state.jobs[index].work != work {
                index += 1;
                continue;
            }
            let job = &mut state.jobs[index];
            let job_slot = pass.jobs.len();
            let mut took = 0;
            while job.next < job.inputs.len() {
                let len = job.inputs[job.next].ids.len();
                if !pass.inputs.is_empty() && pass.tokens + len > budget {
                    break;
                }
                pass.tokens += len;
                pass.inputs.push(std::mem::replace(&mut job.inputs[job.next], Encoded { ids: Vec::new(), type_ids: Vec::new() }));
                pass.owners.push(job_slot);
                job.next += 1;
                took += 1;
            }
            if took == 0 {
                break;
            }
            pass.jobs.push(state.jobs.remove(index).expect("index is in range"));
            if pass.tokens >= budget {
                break;
            }
        }
        self.metrics.queue_depth.store(state.jobs.len() as u64, Ordering::Relaxed);
        Some(pass)
    }

    /// One forward pass. An engine error or panic fails every request in the pass (their
    /// clients get a 500) and the thread goes on with the next.
    fn compute(&self, pass: &mut Pass) {
        let started = Instant::now();
        let model = pass.model.model.clone();
        let outcome = catch_unwind(AssertUnwindSafe(|| match pass.work {
            Work::Embed => model.embed_encoded(&pass.inputs, &self.options, &mut || {}),
            Work::Score => model.score_encoded(&pass.inputs, &self.options, &mut || {}).map(|s| s.into_iter().map(|x| vec![x]).collect()),
        }));
        self.metrics.record_pass(pass.inputs.len(), pass.tokens, started.elapsed());
        let failure = match outcome {
            Ok(Ok(vectors)) => {
                for (owner, vector) in pass.owners.iter().zip(vectors) {
                    pass.jobs[*owner].results.push(vector);
                }
                return;
            }
            Ok(Err(e)) => match e.kind() {
                ErrorKind::InvalidParameter | ErrorKind::InputTooLong => EngineFailure::Refused(e.to_string()),
                _ => EngineFailure::Error(e.to_string()),
            },
            Err(_) => {
                self.metrics.engine_panics.fetch_add(1, Ordering::Relaxed);
                EngineFailure::Panic
            }
        };
        for job in pass.jobs.drain(..) {
            self.finish(job, Err(failure.clone()));
        }
    }
}

/// The inputs of one forward pass and the jobs they came from.
struct Pass {
    model: Arc<ServedModel>,
    work: Work,
    jobs: Vec<Job>,
    inputs: Vec<Encoded>,
    /// For each input, its job's index in `jobs` (inputs of a job are consecutive and in order).
    owners: Vec<usize>,
    tokens: usize,
}

/// A poisoned lock only means a panic elsewhere while it was held; the queue stays usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
