//! The vectorizer: one background worker per database with vectorized tables fills, table by
//! table, the targets bge_vectorize's trigger left NULL, a batch per transaction. It polls every
//! second, so the rows of many small transactions coalesce into full batches, and runs each
//! table's batch as the table's owner (a security-restricted operation, as autovacuum runs index
//! functions), in a subtransaction, so that one table's error is recorded and retried later
//! instead of stopping the others.
//!
//! Who starts it: bge_vectorize; at server start (with shared_preload_libraries) a launcher that
//! starts one per database and lets those without vectorized tables exit; and, after a restart
//! without preloading, bge_vectorize_status or the first write a connection makes to a
//! vectorized table. An advisory lock keeps it to one per database. It exits (and stays down)
//! on SIGTERM — DROP DATABASE ... WITH (FORCE), pg_terminate_backend — and after a minute
//! without registrations; when it is stopped (a table's code ignoring cancellation, see
//! owner::UserCodeTimer) or fails unexpectedly it restarts after RESTART.
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use bge_engine::backend::Precision;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi::quote_identifier;
use pgrx::PgSqlErrorCode;

use super::fill::{self, qualified_name, Batch};
use super::owner::{self, extension_schema, run_as, UserCodeTimer};
use crate::errors::{raise_with, OrRaise};
use crate::gucs;
use crate::compute::Call;

const WORKER_TYPE: &str = "pg_bge vectorizer";
/// How often an idle worker looks for pending rows.
const NAPTIME: Duration = Duration::from_secs(1);
/// How long a worker with nothing registered waits before exiting (a bge_vectorize that started
/// it may not have committed yet).
const IDLE_EXIT: Duration = Duration::from_secs(60);
/// Tokens per batch (one transaction).
const BATCH_TOKENS: usize = 16384;
/// How soon a stopped worker comes back (see the module comment).
const RESTART: Duration = Duration::from_secs(3);
/// One worker per database: it holds a session lock on this object (class pg_extension,
/// sub-id 1), which no SQL statement can take or release (an advisory lock any role could hold
/// or drop). pg_locks shows it as locktype 'object'.
const LOCK_OBJECT: u32 = 0x6267_6576;
const LOCK_SUBID: u16 = 1;

/// Takes this database's worker lock for the session; false when another process holds it.
fn worker_lock_tag(db: pg_sys::Oid) -> pg_sys::LOCKTAG {
    pg_sys::LOCKTAG {
        locktag_field1: u32::from(db),
        locktag_field2: u32::from(pg_sys::ExtensionRelationId),
        locktag_field3: LOCK_OBJECT,
        locktag_field4: LOCK_SUBID,
        locktag_type: pg_sys::LockTagType::LOCKTAG_OBJECT as u8,
        locktag_lockmethodid: 1, // DEFAULT_LOCKMETHOD
    }
}

fn take_worker_lock(db: pg_sys::Oid) -> bool {
    let tag = worker_lock_tag(db);
    // SAFETY: a session lock of this process, taken without waiting. PostgreSQL releases only
    // advisory session locks when a process exits, so this one is released by an exit callback
    // (otherwise it would outlive the worker, and no worker would start again).
    unsafe {
        if pg_sys::LockAcquire(&tag, pg_sys::ExclusiveLock as pg_sys::LOCKMODE, true, true) != pg_sys::LockAcquireResult::LOCKACQUIRE_OK {
            return false;
        }
        pg_sys::before_shmem_exit(Some(release_worker_lock), pg_sys::Datum::from(u32::from(db)));
    }
    true
}

#[pg_guard]
unsafe extern "C-unwind" fn release_worker_lock(_code: i32, db: pg_sys::Datum) {
    let tag = worker_lock_tag(pg_sys::Oid::from(db.value() as u32));
    // SAFETY: the session lock take_worker_lock took, released as the process exits.
    unsafe { pg_sys::LockRelease(&tag, pg_sys::ExclusiveLock as pg_sys::LOCKMODE, true) };
}

/// Registers the launcher (from _PG_init while preloading).
pub fn register_launcher() {
    BackgroundWorkerBuilder::new("pg_bge vectorizer launcher")
        .set_type("pg_bge vectorizer launcher")
        .set_library("pg_bge")
        .set_function("bge_vectorizer_launcher_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        // It exits with code 0 when done, which unregisters it; 10 s after an ERROR.
        .set_restart_time(Some(Duration::from_secs(10)))
        .load();
}

/// Starts one worker per database that allows connections; those with nothing to do exit.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn bge_vectorizer_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(None, None);
    for (oid, name) in databases() {
        if launch(oid, &name, false).is_err() {
            pgrx::warning!("pg_bge vectorizer launcher: no background worker slot for database \"{name}\" (max_worker_processes)");
        }
    }
}

/// (oid, name) of the databases a worker may connect to, read from the shared catalog without
/// being connected to any database.
fn databases() -> Vec<(pg_sys::Oid, String)> {
    let mut found = Vec::new();
    // SAFETY: a catalog scan inside a transaction of this process, as PostgreSQL's own launchers
    // do; every tuple is read before the scan moves on.
    unsafe {
        pg_sys::StartTransactionCommand();
        let rel = pg_sys::table_open(pg_sys::DatabaseRelationId, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let scan = pg_sys::table_beginscan_catalog(rel, 0, std::ptr::null_mut());
        loop {
            let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if tuple.is_null() {
                break;
            }
            let header = (*tuple).t_data;
            let db = &*header.cast::<u8>().add((*header).t_hoff as usize).cast::<pg_sys::FormData_pg_database>();
            // datconnlimit -2: a database left invalid by an interrupted DROP DATABASE.
            if db.datallowconn && !db.datistemplate && db.datconnlimit != -2 {
                let name = std::ffi::CStr::from_ptr(db.datname.data.as_ptr()).to_string_lossy().into_owned();
                found.push((db.oid, name));
            }
        }
        pg_sys::table_endscan(scan);
        pg_sys::table_close(rel, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        pg_sys::CommitTransactionCommand();
    }
    found
}

/// Registers a worker for database `oid`; with `wait`, returns its pid once started.
fn launch(oid: pg_sys::Oid, name: &str, wait: bool) -> Result<Option<i32>, ()> {
    let mut title = format!("{WORKER_TYPE} {name}");
    while title.len() > 90 {
        title.pop();
    }
    let mut builder = BackgroundWorkerBuilder::new(&title)
        .set_type(WORKER_TYPE)
        .set_library("pg_bge")
        .set_function("bge_vectorizer_main")
        .set_argument(Some(pg_sys::Datum::from(u32::from(oid))))
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(RESTART));
    if wait {
        // SAFETY: a plain read of this process's pid.
        builder = builder.set_notify_pid(unsafe { pg_sys::MyProcPid });
    }
    let worker = builder.load_dynamic().map_err(|_| ())?;
    Ok(if wait { worker.wait_for_startup().ok() } else { None })
}

/// This database's worker: its pid, starting it when none runs (see the module comment).
pub fn start_for_this_database() -> Option<i32> {
    // SAFETY: plain reads of this backend's state.
    let (db, in_recovery) = unsafe { (pg_sys::MyDatabaseId, pg_sys::RecoveryInProgress()) };
    if in_recovery {
        return None;
    }
    // This runs in any role's session (the trigger): its queries go through a restricted path.
    let _scope = owner::SettingsScope::enter();
    // The holder of the worker's lock: pg_locks shows it to every role (pg_stat_activity hides
    // other users' backend types, so an unprivileged caller would start a needless worker).
    let running = Spi::get_one_with_args::<i32>(
        "SELECT pid FROM pg_catalog.pg_locks WHERE locktype OPERATOR(pg_catalog.=) 'object' AND granted \
         AND database OPERATOR(pg_catalog.=) $1 AND classid OPERATOR(pg_catalog.=) $2 \
         AND objid OPERATOR(pg_catalog.=) $3::pg_catalog.int8::pg_catalog.oid AND objsubid OPERATOR(pg_catalog.=) $4 LIMIT 1",
        &[db.into(), pg_sys::ExtensionRelationId.into(), (LOCK_OBJECT as i64).into(), (LOCK_SUBID as i32).into()],
    );
    if let Ok(Some(pid)) = running {
        return Some(pid);
    }
    let name = Spi::get_one::<String>("SELECT pg_catalog.current_database()::pg_catalog.text").ok().flatten().unwrap_or_default();
    match launch(db, &name, true) {
        Ok(pid) => pid,
        Err(()) => {
            pgrx::warning!("pg_bge: could not start the vectorizer worker: no free background worker slot (max_worker_processes)");
            None
        }
    }
}

/// Per connection: whether the trigger has made sure the worker runs.
static mut WORKER_CHECKED: bool = false;

/// Called by the trigger: the first vectorized write of a connection makes sure the worker runs
/// (after a restart without shared_preload_libraries nothing else would start it).
pub fn ensure_started_once() {
    // SAFETY: backend-local state, main thread only.
    unsafe {
        if !WORKER_CHECKED {
            WORKER_CHECKED = true;
            start_for_this_database();
        }
    }
}

/// A vectorized table as the worker reads its registration.
struct Registration {
    table: pg_sys::Oid,
    /// Its owner when the registrations were read: roles take turns by it (a batch runs as the
    /// owner read again under the table's lock).
    owner: pg_sys::Oid,
    source: String,
    target: String,
    embedding: Call,
    rows_done: i64,
    tokens_done: i64,
    /// Why the registration no longer fits its table (checked before every batch).
    problem: Option<String>,
}

/// The worker's memory of a table between batches.
#[derive(Default)]
struct TableState {
    /// The current run of batches: since when, and rows filled.
    busy_since: Option<Instant>,
    busy_rows: usize,
    /// Whether caught_up_at has been written since the worker started.
    caught_up_written: bool,
    failures: u32,
    retry_at: Option<Instant>,
    /// Of a partitioned table's partitions (owner::leaves), the one the last batch filled.
    leaf: usize,
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn bge_vectorizer_main(arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db = pg_sys::Oid::from(arg.value() as u32);
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(db), None);
    // The worker's own queries never resolve a name through a path a role could write to.
    BackgroundWorker::transaction(owner::restrict_session_search_path);
    // The extension's schema is read again in every transaction that names its tables: it may
    // be dropped and created elsewhere while the worker runs, and a stale name could reach a
    // table someone else created under the old one.
    if BackgroundWorker::transaction(extension_schema).is_none() {
        return;
    }
    if !BackgroundWorker::transaction(|| take_worker_lock(db)) {
        return; // another worker serves this database
    }
    pgrx::log!("pg_bge vectorizer started");
    let mut tables: HashMap<(pg_sys::Oid, String), TableState> = HashMap::new();
    let quarantine = Quarantine::of_database(db);
    if let Some((table, target, failures)) = quarantine.take() {
        // The last worker died inside this table's batch: keep away from it for a while.
        let delay = Duration::from_secs((60u64 << failures.min(6)).min(3600));
        let message = format!(
            "the vectorizer worker was stopped inside this table's batch (its own code kept running past bge.vectorize_timeout, or the worker crashed); retried in {} s",
            delay.as_secs()
        );
        BackgroundWorker::transaction(|| {
            pgrx::log!("pg_bge vectorizer: {}.{target}: {message}", qualified_name_or_oid(table));
            if let Err(e) = in_subtransaction(|| record_error(table, &target, &message)) {
                pgrx::log!("pg_bge vectorizer: could not record that error: {e}");
            }
        });
        let state = tables.entry((table, target)).or_default();
        state.failures = failures.saturating_add(1);
        state.retry_at = Some(Instant::now() + delay);
    }
    let mut last_registered = Instant::now();
    let mut next_turn: HashMap<u32, usize> = HashMap::new();
    loop {
        pgrx::check_for_interrupts!();
        exit_if_terminated();
        if BackgroundWorker::sighup_received() {
            // SAFETY: main thread, between transactions.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        let registrations = match BackgroundWorker::transaction(|| in_subtransaction(registrations)) {
            Ok(Some(found)) => found,
            Ok(None) => return, // pg_bge was dropped
            Err(message) => {
                pgrx::log!("pg_bge vectorizer: reading the registrations failed: {message}");
                crate::server::wait(NAPTIME);
                continue;
            }
        };
        if registrations.is_empty() {
            if last_registered.elapsed() > IDLE_EXIT {
                pgrx::log!("pg_bge vectorizer exiting: no vectorized tables");
                return;
            }
        } else {
            last_registered = Instant::now();
        }
        // Roles take turns: each pass gives every owner one batch, of its tables in turn, so a
        // role with many tables does not slow the others down.
        let mut by_owner: std::collections::BTreeMap<u32, Vec<&Registration>> = Default::default();
        for r in &registrations {
            by_owner.entry(u32::from(r.owner)).or_default().push(r);
        }
        let mut more = false;
        for (owner, owned) in by_owner {
            let turn = next_turn.entry(owner).or_insert(0);
            for k in 0..owned.len() {
                let registration = owned[(*turn + k) % owned.len()];
                let state = tables.entry((registration.table, registration.target.clone())).or_default();
                if state.retry_at.is_some_and(|at| Instant::now() < at) {
                    continue;
                }
                quarantine.enter(registration, state.failures);
                more |= run_batch(registration, state);
                quarantine.leave();
                *turn = (*turn + k + 1) % owned.len();
                break;
            }
            exit_if_terminated();
        }
        if !more {
            crate::server::wait(NAPTIME);
        }
    }
}

/// SIGTERM: exit with code 0, which unregisters the worker (see the module comment).
fn exit_if_terminated() {
    if BackgroundWorker::sigterm_received() {
        // SAFETY: main thread; proc_exit runs the exit callbacks and does not return.
        unsafe { pg_sys::proc_exit(0) };
    }
}

/// The registrations of tables that still exist (those of dropped tables are removed); None
/// when pg_bge is no longer installed. Each is checked again: still a plain table, with both
/// columns.
fn registrations() -> Option<Vec<Registration>> {
    let schema = extension_schema()?;
    Spi::connect_mut(|client| {
        for table in ["bge_vectorized", "bge_vectorize_errors"] {
            client
                .update(
                    &format!(
                        "DELETE FROM {schema}.{table} v WHERE NOT EXISTS \
                         (SELECT FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) v.tbl::pg_catalog.oid)"
                    ),
                    None,
                    &[],
                )
                .or_raise();
        }
        let rows = client
            .select(
                &format!(
                    "SELECT v.tbl::pg_catalog.oid, v.source::pg_catalog.text, v.target::pg_catalog.text, v.model, \
                            v.truncate, v.precision, v.rows_done, v.tokens_done, \
                            CASE WHEN c.relkind OPERATOR(pg_catalog.<>) ALL ('{{r,p}}'::pg_catalog.char[]) THEN 'it is no longer a table' \
                                 WHEN s.attnum IS NULL THEN 'its source column is gone' \
                                 WHEN t.attnum IS NULL THEN 'its target column is gone' END, \
                            c.relowner \
                     FROM {schema}.bge_vectorized v \
                     JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) v.tbl::pg_catalog.oid \
                     LEFT JOIN pg_catalog.pg_attribute s ON s.attrelid OPERATOR(pg_catalog.=) c.oid \
                          AND s.attname OPERATOR(pg_catalog.=) v.source AND s.attnum OPERATOR(pg_catalog.>) 0 AND NOT s.attisdropped \
                     LEFT JOIN pg_catalog.pg_attribute t ON t.attrelid OPERATOR(pg_catalog.=) c.oid \
                          AND t.attname OPERATOR(pg_catalog.=) v.target AND t.attnum OPERATOR(pg_catalog.>) 0 AND NOT t.attisdropped \
                     ORDER BY 1, 4"
                ),
                None,
                &[],
            )
            .or_raise();
        let mut found = Vec::new();
        for row in rows {
            let get_oid = |i| row.get::<pg_sys::Oid>(i).ok().flatten().unwrap_or(pg_sys::InvalidOid);
            let get_text = |i| row.get::<String>(i).ok().flatten().unwrap_or_default();
            // bge_vectorize_register writes only these; anything else is refused below.
            let precision = get_text(6);
            let parsed = Precision::parse(&precision);
            found.push(Registration {
                table: get_oid(1),
                source: get_text(2),
                target: get_text(3),
                embedding: Call::registered(get_text(4), parsed.unwrap_or(Precision::Fp32), row.get::<bool>(5).ok().flatten().unwrap_or(true)),
                rows_done: row.get::<i64>(7).ok().flatten().unwrap_or(0),
                tokens_done: row.get::<i64>(8).ok().flatten().unwrap_or(0),
                problem: row.get::<String>(9).ok().flatten().or_else(|| {
                    parsed.is_none().then(|| format!("its precision \"{precision}\" is unknown"))
                }),
                owner: row.get::<pg_sys::Oid>(10).ok().flatten().unwrap_or(pg_sys::InvalidOid),
            });
        }
        Some(found)
    })
}

/// One batch of one table in its own transaction. Returns whether the batch was full (more
/// rows are likely waiting). Whatever fails — the table's code, a timeout, pg_bge's own
/// bookkeeping — is recorded in the table's status row and backs the table off alone.
fn run_batch(r: &Registration, state: &mut TableState) -> bool {
    let started = Instant::now();
    if let Some(problem) = &r.problem {
        // The registration no longer fits its table: nothing to run until bge_unvectorize.
        BackgroundWorker::transaction(|| {
            let message = format!("{} cannot be vectorized: {problem}", qualified_name_or_oid(r.table));
            in_subtransaction(|| record_error(r.table, &r.target, &message)).ok();
        });
        back_off(state);
        return false;
    }
    let max_rows = if r.rows_done > 0 && r.tokens_done > 0 {
        (BATCH_TOKENS as i128 * r.rows_done as i128 / r.tokens_done as i128).clamp(1, 10_000) as usize
    } else {
        128
    };
    let limit = gucs::vectorize_timeout();
    let mut timer = UserCodeTimer::new(limit);
    let outcome = BackgroundWorker::transaction(AssertUnwindSafe(|| {
        let mut interrupt = || {
            pgrx::check_for_interrupts!();
            exit_if_terminated();
        };
        // The table is locked before its owner is read, so the owner cannot change before the
        // batch ends; a table someone holds locked is left for the next pass.
        // SAFETY: a lock of this transaction, released at its end.
        if !unsafe { pg_sys::ConditionalLockRelationOid(r.table, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE) } {
            return Ok(false);
        }
        let done = in_subtransaction(|| {
            let schema = owner::installed_schema();
            let schema = schema.as_str();
            let owner = match owner::relation(r.table) {
                Some(table) if table.kind == "r" || table.kind == "p" => table.owner,
                _ => raise_with(PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE, "the table is no longer a table".into(), "bge_unvectorize it."),
            };
            // A partitioned table's rows live in its partitions: one batch from the first with
            // rows to fill, starting at the one the last batch filled.
            let leaves = owner::leaves(r.table);
            for k in 0..leaves.len() {
                let at = (state.leaf + k) % leaves.len();
                let skip = skipped_rows(schema, r, leaves[at], owner, &mut timer);
                let batch = run_as(owner, || fill::fill_batch(leaves[at], &r.source, &r.target, &r.embedding, max_rows, None, &skip, &mut timer, &mut interrupt));
                if batch.fetched > 0 {
                    state.leaf = at;
                    // A partial batch: this partition is done, others may not be.
                    let more = batch.fetched == max_rows || leaves.len() > 1;
                    record(schema, r, leaves[at], &batch, !more, state, started);
                    return more;
                }
            }
            record(schema, r, r.table, &fill::Batch::default(), true, state, started);
            false
        });
        done.map_err(|message| {
            let message = match limit {
                Some(limit) if timer.expired() => format!(
                    "the batch was cancelled: the table's own code (triggers, constraints, defaults, index expressions, policies) ran longer than bge.vectorize_timeout ({} ms); it is retried later",
                    limit.as_millis()
                ),
                _ => message,
            };
            pgrx::log!("pg_bge vectorizer: {}.{}: {message}", qualified_name_or_oid(r.table), r.target);
            if let Err(e) = in_subtransaction(|| record_error(r.table, &r.target, &message)) {
                pgrx::log!("pg_bge vectorizer: could not record that error: {e}");
            }
        })
    }));
    match outcome {
        Ok(more) => {
            state.failures = 0;
            state.retry_at = None;
            more
        }
        Err(()) => {
            back_off(state);
            false
        }
    }
}

/// The same error would come back at once: retry later, after 2, 4, ... up to 64 s.
fn back_off(state: &mut TableState) {
    state.failures = state.failures.saturating_add(1);
    state.retry_at = Some(Instant::now() + Duration::from_secs(1 << state.failures.min(6)));
    state.busy_since = None;
}

/// The table's name for messages, or its OID where even that fails (inside a transaction).
fn qualified_name_or_oid(table: pg_sys::Oid) -> String {
    owner::relation(table).map(|r| r.name).unwrap_or_else(|| format!("table {}", u32::from(table)))
}

/// ctids of the rows that failed and have not changed since, checked as the table's owner;
/// forgets the others (updated, deleted, or filled by someone else), so those are tried again.
fn skipped_rows(schema: &str, r: &Registration, leaf: pg_sys::Oid, owner: pg_sys::Oid, timer: &mut UserCodeTimer) -> Vec<String> {
    let args = [leaf.into(), r.target.as_str().into()];
    let recorded: Vec<(String, String)> = Spi::connect(|client| {
        client
            .select(
                &format!(
                    "SELECT row_ctid::pg_catalog.text, row_xmin::pg_catalog.text FROM {schema}.bge_vectorize_errors \
                     WHERE tbl OPERATOR(pg_catalog.=) $1::pg_catalog.regclass AND target OPERATOR(pg_catalog.=) $2::pg_catalog.name"
                ),
                None,
                &args,
            )
            .or_raise()
            .map(|row| (row.get::<String>(1).ok().flatten().unwrap_or_default(), row.get::<String>(2).ok().flatten().unwrap_or_default()))
            .collect()
    });
    if recorded.is_empty() {
        return Vec::new();
    }
    let (ctids, xmins): (Vec<String>, Vec<String>) = recorded.into_iter().unzip();
    let query = format!(
        "SELECT e.c::pg_catalog.text FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.tid[]), pg_catalog.unnest($2::pg_catalog.xid[])) AS e(c, x) \
         WHERE EXISTS (SELECT FROM {} t WHERE t.ctid OPERATOR(pg_catalog.=) e.c AND t.xmin OPERATOR(pg_catalog.=) e.x AND t.{} IS NULL)",
        qualified_name(leaf),
        quote_identifier(&r.target)
    );
    let still_failing: Vec<String> = run_as(owner, || {
        timer.resume();
        let found = Spi::connect(|client| {
            client
                .select(&query, None, &[ctids.into(), xmins.into()])
                .or_raise()
                .filter_map(|row| row.get::<String>(1).ok().flatten())
                .collect()
        });
        timer.pause();
        found
    });
    Spi::run_with_args(
        &format!(
            "DELETE FROM {schema}.bge_vectorize_errors WHERE tbl OPERATOR(pg_catalog.=) $1::pg_catalog.regclass \
             AND target OPERATOR(pg_catalog.=) $2::pg_catalog.name AND row_ctid OPERATOR(pg_catalog.<>) ALL($3::pg_catalog.tid[])"
        ),
        &[leaf.into(), r.target.as_str().into(), still_failing.clone().into()],
    )
    .or_raise();
    still_failing
}

/// The batch's failed rows (in `leaf`, the plain table it filled) and the registration's
/// counters (which saturate: they are statistics).
fn record(schema: &str, r: &Registration, leaf: pg_sys::Oid, batch: &Batch, caught_up: bool, state: &mut TableState, started: Instant) {
    if batch.rows > 0 {
        state.busy_since.get_or_insert(started);
        state.busy_rows += batch.rows;
    }
    let rate = state.busy_since.map(|since| state.busy_rows as f64 / since.elapsed().as_secs_f64().max(1e-6));
    let last_error = batch.failed.last().map(|f| format!("row {}: {}", f.key, f.error));
    let write = batch.rows > 0 || last_error.is_some() || (caught_up && (state.busy_since.is_some() || !state.caught_up_written));
    Spi::connect_mut(|client| {
        for f in &batch.failed {
            client
                .update(
                    &format!(
                        "INSERT INTO {schema}.bge_vectorize_errors (tbl, target, row_ctid, row_xmin, row_key, error) \
                         VALUES ($1::pg_catalog.regclass, $2, $3::pg_catalog.tid, $4::pg_catalog.xid, $5, $6) ON CONFLICT (tbl, target, row_ctid) DO UPDATE \
                         SET row_xmin = EXCLUDED.row_xmin, row_key = EXCLUDED.row_key, error = EXCLUDED.error, failed_at = pg_catalog.now()"
                    ),
                    None,
                    &[leaf.into(), r.target.as_str().into(), f.ctid.as_str().into(), f.xmin.as_str().into(), f.key.as_str().into(), f.error.as_str().into()],
                )
                .or_raise();
        }
        if write {
            let saturating = |column: &str, arg: &str| {
                format!(
                    "{column} = CASE WHEN {column} OPERATOR(pg_catalog.>) (9223372036854775807::pg_catalog.int8 OPERATOR(pg_catalog.-) {arg}) \
                     THEN 9223372036854775807::pg_catalog.int8 ELSE {column} OPERATOR(pg_catalog.+) {arg} END"
                )
            };
            client
                .update(
                    &format!(
                        "UPDATE {schema}.bge_vectorized SET {}, {}, \
                         rows_per_s = coalesce($5, rows_per_s), \
                         last_batch_at = CASE WHEN $3 OPERATOR(pg_catalog.>) 0 THEN pg_catalog.now() ELSE last_batch_at END, \
                         caught_up_at = CASE WHEN $6 THEN pg_catalog.now() ELSE caught_up_at END, \
                         last_error = coalesce($7, last_error), last_error_at = CASE WHEN $7 IS NULL THEN last_error_at ELSE pg_catalog.now() END \
                         WHERE tbl OPERATOR(pg_catalog.=) $1::pg_catalog.regclass AND target OPERATOR(pg_catalog.=) $2::pg_catalog.name",
                        saturating("rows_done", "$3"),
                        saturating("tokens_done", "$4")
                    ),
                    None,
                    &[
                        r.table.into(),
                        r.target.as_str().into(),
                        (batch.rows as i64).into(),
                        (batch.tokens as i64).into(),
                        rate.into(),
                        caught_up.into(),
                        last_error.into(),
                    ],
                )
                .or_raise();
        }
    });
    if caught_up {
        state.busy_since = None;
        state.busy_rows = 0;
        state.caught_up_written = true;
    }
}

fn record_error(table: pg_sys::Oid, target: &str, message: &str) {
    let schema = owner::installed_schema();
    // The table's code chooses the text: keep it short.
    let mut end = message.len().min(1000);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let message = &message[..end];
    Spi::run_with_args(
        &format!(
            "UPDATE {schema}.bge_vectorized SET last_error = $3, last_error_at = pg_catalog.now() \
             WHERE tbl OPERATOR(pg_catalog.=) $1::pg_catalog.regclass AND target OPERATOR(pg_catalog.=) $2::pg_catalog.name"
        ),
        // Readers of the table see it: no server paths.
        &[table.into(), target.into(), crate::errors::without_model_dir(message).into()],
    )
    .or_raise();
}

/// Which table's batch the worker is in, in a file under the data directory while the batch
/// runs: a worker that dies inside one (stopped because the table's code ignored cancellation,
/// or crashed) leaves it behind, and its successor backs that table off instead of running
/// into it again at once, so the other tables are served.
struct Quarantine {
    path: std::path::PathBuf,
}

impl Quarantine {
    fn of_database(db: pg_sys::Oid) -> Quarantine {
        // Relative to the data directory, every server process's working directory.
        Quarantine { path: format!("pg_stat_tmp/pg_bge_vectorizer_{}", u32::from(db)).into() }
    }

    fn enter(&self, r: &Registration, failures: u32) {
        let _ = std::fs::write(&self.path, format!("{} {failures} {}", u32::from(r.table), r.target));
    }

    fn leave(&self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// The table, target and failure count a dead predecessor left, and forgets them.
    fn take(&self) -> Option<(pg_sys::Oid, String, u32)> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        self.leave();
        let mut parts = text.splitn(3, ' ');
        let table = parts.next()?.parse::<u32>().ok()?;
        let failures = parts.next()?.parse::<u32>().ok()?;
        Some((pg_sys::Oid::from(table), parts.next()?.to_string(), failures))
    }
}

/// Runs `f` in a subtransaction: its ERROR (or panic) rolls back only what `f` did and comes
/// back as the message.
pub fn in_subtransaction<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    // SAFETY: the begin/release/rollback pattern of PL/pgSQL's exception blocks, on the main
    // thread inside a transaction; the memory context and resource owner are restored after.
    unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        let restore = move || {
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::CurrentResourceOwner = owner;
        };
        let f = AssertUnwindSafe(f);
        PgTryBuilder::new(AssertUnwindSafe(move || {
            let result = (f.0)();
            pg_sys::ReleaseCurrentSubTransaction();
            restore();
            Ok(result)
        }))
        .catch_others(move |e| {
            restore();
            let message = match &e {
                pg_sys::panic::CaughtError::PostgresError(r) | pg_sys::panic::CaughtError::ErrorReport(r) => r.message().to_string(),
                pg_sys::panic::CaughtError::RustPanic { ereport, .. } => ereport.message().to_string(),
            };
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
            restore();
            Err(message)
        })
        .execute()
    }
}
