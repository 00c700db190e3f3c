//! Every bge.* setting, with typed getters.
use std::ffi::{CStr, CString};
use std::path::PathBuf;

use bge_engine::backend::Precision;
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting, PostgresGucEnum};
use pgrx::pg_sys;

#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum Device {
    #[name = c"auto"]
    Auto,
    #[name = c"cpu"]
    Cpu,
    #[name = c"cuda"]
    Cuda,
}

/// bge.precision's values; [`precision`] gives the engine's type.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
enum PrecisionSetting {
    #[name = c"fp32"]
    Fp32,
    #[name = c"bf16"]
    Bf16,
    #[name = c"int8"]
    Int8,
}

static MODEL_DIR: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static MODEL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"all-MiniLM-L6-v2"));
static DEVICE: GucSetting<Device> = GucSetting::<Device>::new(Device::Auto);
static PRECISION: GucSetting<PrecisionSetting> = GucSetting::<PrecisionSetting>::new(PrecisionSetting::Fp32);
static TRUNCATE: GucSetting<bool> = GucSetting::<bool>::new(true);
static THREADS: GucSetting<i32> = GucSetting::<i32>::new(0);
static MAX_BATCH_TOKENS: GucSetting<i32> = GucSetting::<i32>::new(4096);
static SERVER: GucSetting<bool> = GucSetting::<bool>::new(true);
static EXECUTOR_BATCHING: GucSetting<bool> = GucSetting::<bool>::new(true);
static VECTORIZE_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(5000);
static SERVER_SLOTS: GucSetting<i32> = GucSetting::<i32>::new(64);
static SERVER_SLOT_KB: GucSetting<i32> = GucSetting::<i32>::new(256);
static SERVER_MEMORY_MB: GucSetting<i32> = GucSetting::<i32>::new(4096);
/// bge.max_batch_tokens' upper bound: a setting any user may change must not size memory
/// without limit (the engine also splits batches by memory).
const MAX_BATCH_TOKENS_LIMIT: i32 = 65_536;

/// `preloading`: _PG_init runs while shared_preload_libraries is processed, the only time the
/// model server's postmaster settings may be defined.
pub fn init(preloading: bool) {
    GucRegistry::define_string_guc(
        c"bge.model_dir",
        c"Directory holding one subdirectory per model.",
        c"Each subdirectory is a sentence-transformers model directory, named after the model. Empty means $sharedir/bge_models. Only superusers may change it: it reads files from disk.",
        &MODEL_DIR,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"bge.model",
        c"Model used when a function is called without one.",
        c"The name of a directory under bge.model_dir.",
        &MODEL,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"bge.device",
        c"Where embeddings are computed: auto, cpu or cuda.",
        c"auto uses an NVIDIA GPU (CUDA) when one works and the CPU otherwise, never failing for want of a GPU; cuda requires the GPU and raises an error without one; cpu never touches the GPU.",
        &DEVICE,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"bge.precision",
        c"Arithmetic of the CPU backend's linear layers: fp32, bf16 or int8.",
        c"fp32 matches sentence-transformers (cosine >= 0.99999); bf16 rounds weights and activations to bfloat16 for about twice the speed on CPUs with AVX512-BF16 (cosine about 0.999 or better), and is an error elsewhere; int8 quantizes weights to 8 bits (per output channel, in groups of 64 inputs) and activations per token to 16 bits, with exact integer sums (AVX512-VNNI, AVX2 or portable kernels, on every CPU; cosine about 0.999 or better).",
        &PRECISION,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"bge.truncate",
        c"Truncate inputs longer than the model's max_seq_length.",
        c"on embeds the first max_seq_length tokens, as sentence-transformers does; off raises an error for longer inputs.",
        &TRUNCATE,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"bge.threads",
        c"CPU threads one backend uses for a forward pass.",
        c"0 (auto): the cores shared out among the backends connected to the database (all of them for a lone session, at least 1 each), and 1 inside a parallel query, so many connections never oversubscribe the CPUs. Values above the core count mean the core count.",
        &THREADS,
        0,
        1024,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"bge.max_batch_tokens",
        c"Most tokens in one forward pass of the array form of bge_embed.",
        c"Inputs are grouped by length into passes of at most this many tokens (and of bounded memory); results do not depend on it.",
        &MAX_BATCH_TOKENS,
        1,
        MAX_BATCH_TOKENS_LIMIT,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"bge.server",
        c"Compute embeddings in the model server (when shared_preload_libraries has pg_bge).",
        c"on: the model server background worker holds every model once for the whole cluster and batches requests across connections; off: this session loads its own copy and computes in its own process. Without preloading, every session computes in its own process.",
        &SERVER,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"bge.executor_batching",
        c"Batch pg_bge's per-row calls across rows in the executor.",
        c"on: a statement that calls bge_embed, bge_embed_query, bge_embed_sparse, bge_sparse_text, bge_embed_colbert or bge_rerank once per row (in a SELECT list, an aggregate's argument, UPDATE, INSERT ... SELECT, CREATE TABLE AS) gets a BGE Batch node that computes many rows in one pass, with the same results; off: one call per row.",
        &EXECUTOR_BATCHING,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"bge.vectorize_timeout",
        c"Longest time a vectorized table's own code may run in one batch of the vectorizer worker.",
        c"Triggers, constraints, defaults, index expressions and policies of the table run as its owner while the worker writes a batch; past this the batch is cancelled and rolled back, the table is retried later with its error in bge_vectorize_status(), and the other tables are served meanwhile. Embedding time does not count. 0 means no limit.",
        &VECTORIZE_TIMEOUT_MS,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    if preloading {
        init_server();
    }
    // Reserved only now: an unknown bge.* name is an error, a server setting defined above is not.
    // SAFETY: called from _PG_init with a static C string.
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"bge".as_ptr()) };
}

/// The model server's postmaster settings.
fn init_server() {
    GucRegistry::define_int_guc(
        c"bge.server_slots",
        c"Requests the model server can hold at once (shared memory slots).",
        c"A backend uses one slot per request in flight; when all are in use, further requests wait for one.",
        &SERVER_SLOTS,
        1,
        4096,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"bge.server_slot_size",
        c"Shared memory per model server request slot.",
        c"Token ids of one request, and each piece of its result, pass through it: larger arrays are split into several requests, larger results into several pieces. It must hold the token ids of the longest input (8 bytes a token).",
        &SERVER_SLOT_KB,
        64,
        64 * 1024,
        GucContext::Postmaster,
        GucFlags::UNIT_KB,
    );
    GucRegistry::define_int_guc(
        c"bge.server_memory",
        c"Memory the model server may keep in model copies (0: no limit).",
        c"Each model, precision (bge.precision) and device a request asks for is a copy the server loads and keeps. When loading one would take the copies past this much, the least recently used others are dropped first (a copy is counted as what the server's memory grew by when it loaded it, as bge_server_status() shows); a copy larger than the limit alone is still loaded.",
        &SERVER_MEMORY_MB,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_MB,
    );
}

fn string(setting: &GucSetting<Option<CString>>) -> Option<String> {
    setting.get().map(|s| s.to_string_lossy().into_owned()).filter(|s| !s.is_empty())
}

pub fn model_dir() -> PathBuf {
    match string(&MODEL_DIR) {
        Some(dir) => PathBuf::from(dir),
        None => share_dir().join("bge_models"),
    }
}

fn share_dir() -> PathBuf {
    let mut buf = [0 as std::ffi::c_char; pg_sys::MAXPGPATH as usize];
    // SAFETY: my_exec_path is set before any backend runs SQL; buf is MAXPGPATH long as required.
    unsafe {
        pg_sys::get_share_path(std::ptr::addr_of!(pg_sys::my_exec_path) as *const std::ffi::c_char, buf.as_mut_ptr());
        PathBuf::from(CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned())
    }
}

pub fn server() -> bool {
    SERVER.get()
}

pub fn server_slots() -> usize {
    SERVER_SLOTS.get().max(1) as usize
}

pub fn server_slot_bytes() -> usize {
    SERVER_SLOT_KB.get().max(64) as usize * 1024
}

/// The model server's compute threads: bge.threads as the server's configuration sets it, 0
/// meaning every core (the server computes for all connections).
pub fn server_threads() -> usize {
    THREADS.get().max(0) as usize
}

pub fn executor_batching() -> bool {
    EXECUTOR_BATCHING.get()
}

pub fn max_batch_tokens() -> usize {
    MAX_BATCH_TOKENS.get().max(1) as usize
}

pub fn model() -> String {
    string(&MODEL).unwrap_or_default()
}

pub fn device() -> Device {
    DEVICE.get()
}

pub fn precision() -> Precision {
    match PRECISION.get() {
        PrecisionSetting::Fp32 => Precision::Fp32,
        PrecisionSetting::Bf16 => Precision::Bf16,
        PrecisionSetting::Int8 => Precision::Int8,
    }
}

/// Settings for one call. `immutable` calls (the forms that name their model) ignore the
/// settings that would change a result: they always truncate.
pub fn run_options(immutable: bool) -> bge_engine::RunOptions {
    bge_engine::RunOptions {
        truncate: immutable || TRUNCATE.get(),
        threads: threads(),
        max_batch_tokens: max_batch_tokens(),
    }
}

/// Worker threads for this call: bge.threads, or for 0 (auto) the cores divided among the
/// client backends connected to this database (all of them for a lone session), and 1 inside
/// a parallel query (each of its processes then has a core to itself).
fn threads() -> usize {
    let set = THREADS.get();
    if set > 0 {
        return set as usize;
    }
    // SAFETY: a plain read of backend state on the main thread.
    if unsafe { pg_sys::IsInParallelMode() } {
        return 1;
    }
    (bge_engine::threads::available() / client_backends().max(1)).max(1)
}

/// Client backends connected to this database: autovacuum, background and parallel workers
/// come and go and would make the thread count flap, so they do not count.
fn client_backends() -> usize {
    // SAFETY: ProcGlobal's PGPROC array lives in shared memory for the server's life; its
    // fields are read without a lock, which at worst miscounts a backend starting or exiting.
    unsafe {
        let global = &*pg_sys::ProcGlobal;
        let procs = std::slice::from_raw_parts(global.allProcs, global.allProcCount as usize);
        procs
            .iter()
            // A PGPROC keeps its pid and database after its backend exits (until reused); only
            // a live one owns its latch.
            .filter(|p| p.pid != 0 && p.procLatch.owner_pid != 0)
            .filter(|p| p.databaseId == pg_sys::MyDatabaseId && u32::from(p.statusFlags) & pg_sys::PROC_IS_AUTOVACUUM == 0 && regular_backend(p))
            .count()
    }
}

#[cfg(feature = "pg18")]
fn regular_backend(p: &pg_sys::PGPROC) -> bool {
    p.isRegularBackend
}

#[cfg(not(feature = "pg18"))]
fn regular_backend(p: &pg_sys::PGPROC) -> bool {
    !p.isBackgroundWorker
}

/// bge.server_memory in bytes; None for 0 (no limit).
pub fn server_memory_bytes() -> Option<u64> {
    let mb = SERVER_MEMORY_MB.get();
    (mb > 0).then(|| mb as u64 * 1024 * 1024)
}

/// bge.vectorize_timeout; None for 0 (no limit).
pub fn vectorize_timeout() -> Option<std::time::Duration> {
    let ms = VECTORIZE_TIMEOUT_MS.get();
    (ms > 0).then(|| std::time::Duration::from_millis(ms as u64))
}
