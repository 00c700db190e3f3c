//! RAG tables at scale: bge_backfill (a procedure in sql/pg_bge.sql that commits between the
//! batches of [`bge_backfill_step`]) and bge_vectorize (a trigger plus a worker per database
//! filling what the trigger leaves NULL). Both fill a column through [`fill::fill_batch`], as the
//! table's owner (see owner.rs and docs/security.md).
pub mod fill;
pub mod owner;
mod trigger;
pub mod worker;

use std::cell::RefCell;
use std::time::{Duration, Instant};

use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{PgLogLevel, PgSqlErrorCode};

use crate::compute::{check_interrupts, Call};
use crate::errors::{raise_with, OrRaise};
use fill::fill_batch;
use owner::{owned_table, run_as, SettingsScope, UserCodeTimer};

/// pg_bge's internal functions live in this schema, which the extension creates (CREATE
/// EXTENSION fails where one of that name exists already), so no role can plant a function
/// beside them that pg_bge's own calls would reach. PUBLIC gets USAGE in sql/pg_bge.sql.
#[pg_schema]
pub mod bge_internal {}

/// One batch of 0.1.0's bge_backfill procedure, kept for its SQL: rows past `after` in ctid
/// order, skipping `skip`, as the table's owner (which the caller must be).
#[allow(clippy::type_complexity)]
#[pg_extern(volatile, parallel_unsafe, schema = "bge_internal")]
fn bge_backfill_batch(
    tbl: pg_sys::Oid,
    source: &str,
    target: &str,
    model: Option<&str>,
    max_rows: i32,
    after: &str,
    skip: Vec<String>,
) -> TableIterator<
    'static,
    (
        name!(rows, i32),
        name!(tokens, i64),
        name!(last_ctid, Option<String>),
        name!(failed_ctids, Vec<String>),
        name!(failed, Vec<String>),
    ),
> {
    let table = owned_table(tbl);
    let embedding = Call::new(model);
    let batch = run_as(table.owner, || {
        fill_batch(tbl, source, target, &embedding, max_rows.max(1) as usize, Some(after), &skip, &mut UserCodeTimer::new(None), &mut check_interrupts)
    });
    let failed_ctids = batch.failed.iter().map(|f| f.ctid.clone()).collect();
    let failed = batch.failed.iter().map(|f| format!("{}: {}", f.key, f.error)).collect();
    TableIterator::once((batch.rows as i32, batch.tokens as i64, batch.last_ctid, failed_ctids, failed))
}

/// Refuses, before any work, to run `what` (a pg_bge function that writes) on a standby.
#[pg_extern(volatile, parallel_safe, schema = "bge_internal")]
fn bge_refuse_on_standby(what: &str) {
    // SAFETY: a plain read of shared state.
    if unsafe { pg_sys::RecoveryInProgress() } {
        raise_with(
            PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
            format!("{what} cannot run on a standby"),
            "Run it on the primary; what it writes replicates from there.",
        );
    }
}

/// bge_backfill commits after every batch: refuse, before any work, to run where it cannot.
#[pg_extern(volatile, parallel_unsafe, schema = "bge_internal")]
fn bge_backfill_check_transaction() {
    bge_refuse_on_standby("bge_backfill");
    // SAFETY: a plain read of this backend's transaction state.
    if unsafe { pg_sys::IsTransactionBlock() } {
        raise_with(
            PgSqlErrorCode::ERRCODE_ACTIVE_SQL_TRANSACTION,
            "bge_backfill cannot run inside a transaction block".into(),
            "It commits after every batch: CALL it on its own, outside BEGIN ... COMMIT.",
        );
    }
}

/// The bge_backfill in progress in this backend, kept across its COMMITs.
struct Backfill {
    table: pg_sys::Oid,
    /// The plain tables a pass goes through (owner::leaves), and the one it is in.
    leaves: Vec<pg_sys::Oid>,
    leaf: usize,
    source: String,
    target: String,
    embedding: Call,
    batch_tokens: i64,
    progress: Duration,
    total: i64,
    done: i64,
    tokens: i64,
    /// Rows whose text failed, by plain table (ctids are per table).
    skipped_ctids: Vec<(pg_sys::Oid, String)>,
    skipped: Vec<String>,
    /// The ctid the current pass has reached in the current leaf.
    position: String,
    pass: u32,
    pass_rows: i64,
    rows_wanted: usize,
    started: Instant,
    reported: Instant,
}

thread_local! {
    static BACKFILL: RefCell<Option<Backfill>> = const { RefCell::new(None) };
}

/// Passes over the table: rows locked by writers are skipped, and updates may move rows behind
/// the position, so a backfill goes round again until a pass finds nothing (at most this often).
const MAX_PASSES: u32 = 10;

/// Starts a bge_backfill: the caller must own the table; the embedding is what bge_embed
/// computes in this session (bge_embed(source, model) when a model is named). Columns are
/// checked by bge_check_columns before.
#[pg_extern(volatile, parallel_unsafe, schema = "bge_internal")]
fn bge_backfill_begin(tbl: pg_sys::Oid, source: &str, target: &str, model: Option<&str>, batch_tokens: Option<i32>, progress_s: Option<f64>) {
    bge_refuse_on_standby("bge_backfill");
    let batch_tokens = batch_tokens.unwrap_or(0);
    if batch_tokens < 1 {
        raise_with(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "batch_tokens must be at least 1".into(), "About 16384 keeps batches efficient.");
    }
    let table = owned_table(tbl);
    let embedding = Call::new(model);
    let total = run_as(table.owner, || pending_rows(tbl, source, target));
    let now = Instant::now();
    let state = Backfill {
        table: tbl,
        leaves: owner::leaves(tbl),
        leaf: 0,
        source: source.into(),
        target: target.into(),
        embedding,
        batch_tokens: batch_tokens as i64,
        progress: Duration::from_secs_f64(progress_s.filter(|s| s.is_finite() && *s >= 0.0).unwrap_or(5.0).min(1e9)),
        total,
        done: 0,
        tokens: 0,
        skipped_ctids: Vec::new(),
        skipped: Vec::new(),
        position: "(0,0)".into(),
        pass: 1,
        pass_rows: 0,
        rows_wanted: (batch_tokens / 128).max(1) as usize,
        started: now,
        reported: now,
    };
    BACKFILL.with(|b| *b.borrow_mut() = Some(state));
}

/// One batch of the bge_backfill in progress, in the caller's transaction (the procedure
/// commits after it). Returns false when the backfill is over, after its summary.
#[pg_extern(volatile, parallel_unsafe, schema = "bge_internal")]
fn bge_backfill_step() -> bool {
    let Some(mut b) = BACKFILL.with(|b| b.borrow_mut().take()) else {
        raise_with(PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, "no bge_backfill is in progress".into(), "CALL bge_backfill(...) fills a column.");
    };
    // Ownership is checked again: the table may have changed hands between batches.
    let table = owned_table(b.table);
    loop {
        let batch = match b.leaves.get(b.leaf).copied() {
            Some(leaf) => {
                let skip: Vec<String> = b.skipped_ctids.iter().filter(|(t, _)| *t == leaf).map(|(_, c)| c.clone()).collect();
                let batch = run_as(table.owner, || {
                    fill_batch(leaf, &b.source, &b.target, &b.embedding, b.rows_wanted, Some(&b.position), &skip, &mut UserCodeTimer::new(None), &mut check_interrupts)
                });
                b.skipped_ctids.extend(batch.failed.iter().map(|f| (leaf, f.ctid.clone())));
                batch
            }
            None => fill::Batch::default(),
        };
        let Some(last) = batch.last_ctid else {
            if b.leaf + 1 < b.leaves.len() {
                b.leaf += 1;
                b.position = "(0,0)".into();
                continue;
            }
            // End of a pass: go round again until a pass finds nothing to fill.
            if (b.pass_rows == 0 && b.pass > 1) || b.pass == MAX_PASSES {
                finish(&b, &table);
                return false;
            }
            b.pass += 1;
            b.pass_rows = 0;
            // Partitions attached meanwhile are filled too.
            b.leaves = owner::leaves(b.table);
            b.leaf = 0;
            b.position = "(0,0)".into();
            continue;
        };
        b.position = last;
        b.done = b.done.saturating_add(batch.rows as i64);
        b.pass_rows = b.pass_rows.saturating_add(batch.rows as i64);
        b.tokens = b.tokens.saturating_add(batch.tokens as i64);
        b.skipped.extend(batch.failed.iter().map(|f| format!("{}: {}", f.key, f.error)));
        if b.done > 0 {
            b.rows_wanted = (b.batch_tokens as i128 * b.done as i128 / b.tokens.max(1) as i128).clamp(1, 10_000) as usize;
        }
        if b.reported.elapsed() >= b.progress {
            b.reported = Instant::now();
            let secs = b.started.elapsed().as_secs_f64().max(1e-9);
            let skipped = b.skipped.len() as i64;
            let rate = b.done as f64 / secs;
            pgrx::notice!(
                "bge_backfill: {} of {} rows, {:.0} rows/s, {:.0} tokens/s, about {:.0} s left",
                b.done,
                b.total.max(b.done + skipped),
                rate,
                b.tokens as f64 / secs,
                (b.total - b.done - skipped).max(0) as f64 / rate.max(1e-9)
            );
        }
        BACKFILL.with(|s| *s.borrow_mut() = Some(b));
        return true;
    }
}

/// The backfill's closing NOTICEs and WARNING.
fn finish(b: &Backfill, table: &owner::Relation) {
    let secs = b.started.elapsed().as_secs_f64().max(1e-9);
    pgrx::notice!(
        "bge_backfill: filled {} rows ({} tokens) in {:.1} s: {:.0} rows/s, {:.0} tokens/s",
        b.done,
        b.tokens,
        secs,
        b.done as f64 / secs,
        b.tokens as f64 / secs
    );
    if !b.skipped.is_empty() {
        let mut detail = b.skipped.iter().take(10).cloned().collect::<Vec<_>>().join("\n");
        if b.skipped.len() > 10 {
            detail.push_str("\n...");
        }
        ErrorReport::new(PgSqlErrorCode::ERRCODE_WARNING, format!("bge_backfill: skipped {} rows whose text failed", b.skipped.len()), "pg_bge")
            .set_detail(detail)
            .set_hint("Their target stays NULL; fix the text (or SET bge.truncate = on) and call bge_backfill again.")
            .report(PgLogLevel::WARNING);
    }
    let left_over = run_as(table.owner, || pending_rows(b.table, &b.source, &b.target));
    if left_over > b.skipped.len() as i64 {
        let pending = left_over - b.skipped.len() as i64;
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
            format!("bge_backfill: {pending} rows still pending (written or locked by other transactions meanwhile)"),
            "pg_bge",
        )
        .set_hint("Call bge_backfill again, or keep the column filled with bge_vectorize.")
        .report(PgLogLevel::NOTICE);
    }
}

/// Rows of `table` whose target is NULL and source is not (run as the table's owner).
fn pending_rows(table: pg_sys::Oid, source: &str, target: &str) -> i64 {
    let query = format!(
        "SELECT pg_catalog.count(*) FROM {} WHERE {} IS NULL AND {} IS NOT NULL",
        fill::qualified_name(table),
        pgrx::spi::quote_identifier(target),
        pgrx::spi::quote_identifier(source)
    );
    owner::select_one::<i64>(&query, &[]).or_raise().unwrap_or(0)
}

/// Starts this database's vectorizer worker unless it runs; returns its pid (NULL when it
/// could not start, with a WARNING saying why).
#[pg_extern(volatile, parallel_unsafe, schema = "bge_internal")]
fn bge_vectorizer_start() -> Option<i32> {
    worker::start_for_this_database()
}

/// Writes bge_vectorize's registration of a table the caller owns (bge_vectorized is not
/// writable by PUBLIC: the row is written as the extension's owner after these checks).
#[pg_extern(volatile, parallel_unsafe, schema = "bge_internal")]
fn bge_vectorize_register(tbl: pg_sys::Oid, source: &str, target: &str, model: &str, truncate: bool, precision: &str, pending_index: pg_sys::Oid) {
    owned_table(tbl);
    if !["fp32", "bf16", "int8"].contains(&precision) {
        raise_with(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("unknown precision \"{precision}\""), "fp32, bf16 or int8.");
    }
    let schema = owner::installed_schema();
    let _scope = SettingsScope::enter();
    // Only the partial index bge_vectorize just made on this table is recorded.
    let index_of_table = owner::select_one::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_index i WHERE i.indexrelid OPERATOR(pg_catalog.=) $1 AND i.indrelid OPERATOR(pg_catalog.=) $2)",
        &[pending_index.into(), tbl.into()],
    );
    if index_of_table != Ok(Some(true)) {
        raise_with(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "the pending index is not an index of the table".into(), "bge_vectorize creates it.");
    }
    // Release 0.1.0's table (before ALTER EXTENSION UPDATE) holds the index as a regclass.
    let index = if pending_index_by_name(&schema) { "(SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) $7)" } else { "$7::pg_catalog.regclass" };
    as_extension_owner(|| {
        Spi::run_with_args(
            &format!(
                "INSERT INTO {schema}.bge_vectorized (tbl, source, target, model, truncate, precision, pending_index) \
                 VALUES ($1::pg_catalog.regclass, $2, $3, $4, $5, $6, {index})"
            ),
            &[tbl.into(), source.into(), target.into(), model.into(), truncate.into(), precision.into(), pending_index.into()],
        )
        .or_raise();
    });
}

/// Removes bge_vectorize's registrations of a table the caller owns (one target, or all) and
/// their error rows; returns each removed target with its pending index, for bge_unvectorize
/// to drop.
#[pg_extern(volatile, parallel_unsafe, schema = "bge_internal")]
fn bge_vectorize_unregister(
    tbl: pg_sys::Oid,
    target: Option<&str>,
) -> TableIterator<'static, (name!(target, String), name!(pending_index, Option<pg_sys::Oid>))> {
    // Not owned_table: a registration outlives a change of relkind only in theory, but a
    // table's owner must always be able to remove it.
    let table = owner::any_owned_relation(tbl);
    let schema = owner::installed_schema();
    let index = if pending_index_by_name(&schema) {
        "(SELECT i.indexrelid FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.indexrelid \
          WHERE i.indrelid OPERATOR(pg_catalog.=) r.tbl AND c.relname OPERATOR(pg_catalog.=) r.pending_index)"
    } else {
        "r.pending_index::pg_catalog.oid"
    };
    let removed = as_extension_owner(|| {
        Spi::connect_mut(|client| {
            let rows = client
                .update(
                    &format!(
                        "DELETE FROM {schema}.bge_vectorized r WHERE r.tbl OPERATOR(pg_catalog.=) $1::pg_catalog.regclass \
                         AND ($2::pg_catalog.text IS NULL OR r.target OPERATOR(pg_catalog.=) $2::pg_catalog.name) \
                         RETURNING r.target::pg_catalog.text, {index}"
                    ),
                    None,
                    &[table.oid.into(), target.into()],
                )
                .or_raise();
            let removed: Vec<(String, Option<pg_sys::Oid>)> =
                rows.map(|row| (row.get::<String>(1).ok().flatten().unwrap_or_default(), row.get::<pg_sys::Oid>(2).ok().flatten())).collect();
            for (t, _) in &removed {
                client
                    .update(
                        &format!(
                            "DELETE FROM {schema}.bge_vectorize_errors e WHERE (e.tbl OPERATOR(pg_catalog.=) $1::pg_catalog.regclass \
                             OR e.tbl OPERATOR(pg_catalog.=) ANY (SELECT t.relid FROM pg_catalog.pg_partition_tree($1::pg_catalog.regclass) t)) \
                             AND e.target OPERATOR(pg_catalog.=) $2::pg_catalog.name"
                        ),
                        None,
                        &[table.oid.into(), t.as_str().into()],
                    )
                    .or_raise();
            }
            removed
        })
    });
    TableIterator::new(removed)
}

/// Rows of a vectorized table still waiting for the worker (not counting rows that failed),
/// counted as the table's owner, so that whoever asks never runs the owner's code. NULL for a
/// table that is not vectorized so, the caller may not read (or, under row-level security, is
/// not its owner), or that is no longer a plain table.
#[pg_extern(volatile, parallel_unsafe, schema = "bge_internal")]
fn bge_vectorize_pending(tbl: pg_sys::Oid, source: &str, target: &str) -> Option<i64> {
    let relation = owner::relation(tbl)?;
    // Under row-level security the count would include rows the caller may not see: only for
    // those who act as the owner then.
    if !["r", "p"].contains(&relation.kind.as_str()) || !owner::can_read(tbl) || (relation.row_security && !owner::acts_as(relation.owner)) {
        return None;
    }
    let schema = owner::installed_schema();
    let registered = {
        let _scope = SettingsScope::enter();
        owner::select_one::<bool>(
            &format!(
                "SELECT EXISTS (SELECT FROM {schema}.bge_vectorized v WHERE v.tbl OPERATOR(pg_catalog.=) $1::pg_catalog.regclass \
                 AND v.source OPERATOR(pg_catalog.=) $2::pg_catalog.name AND v.target OPERATOR(pg_catalog.=) $3::pg_catalog.name)"
            ),
            &[tbl.into(), source.into(), target.into()],
        )
    };
    if registered != Ok(Some(true)) {
        return None;
    }
    let query = format!(
        "SELECT pg_catalog.count(*) FROM {} t WHERE {} IS NULL AND {} IS NOT NULL AND NOT EXISTS \
         (SELECT FROM {schema}.bge_vectorize_errors e WHERE e.tbl OPERATOR(pg_catalog.=) t.tableoid::pg_catalog.regclass \
          AND e.target OPERATOR(pg_catalog.=) $1::pg_catalog.name AND e.row_ctid OPERATOR(pg_catalog.=) t.ctid \
          AND e.row_xmin OPERATOR(pg_catalog.=) t.xmin)",
        relation.name,
        pgrx::spi::quote_identifier(target),
        pgrx::spi::quote_identifier(source),
    );
    run_as(relation.owner, || {
        worker::in_subtransaction(|| owner::select_one::<i64>(&query, &[target.into()]).or_raise())
    })
    .ok()
    .flatten()
}

/// Whether bge_vectorized.pending_index is a name (0.2.0 on) rather than 0.1.0's regclass.
fn pending_index_by_name(schema: &str) -> bool {
    let _scope = SettingsScope::enter();
    owner::select_one::<bool>(
        "SELECT a.atttypid OPERATOR(pg_catalog.=) 'pg_catalog.name'::pg_catalog.regtype FROM pg_catalog.pg_attribute a \
         WHERE a.attrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass($1) AND a.attname OPERATOR(pg_catalog.=) 'pending_index'",
        &[format!("{schema}.bge_vectorized").into()],
    )
    .or_raise()
    .unwrap_or(true)
}

/// Runs `f` as the role that installed pg_bge, which owns its registration tables.
fn as_extension_owner<T>(f: impl FnOnce() -> T) -> T {
    run_as(owner::extension_owner(), f)
}
