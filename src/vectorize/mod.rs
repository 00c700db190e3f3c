//! RAG tables at scale: bge_backfill (a procedure in sql/pg_bge.sql repeating
//! [`bge_backfill_batch`]) and bge_vectorize (a trigger plus a worker per database filling what
//! the trigger leaves NULL). Both fill a column through [`fill::fill_batch`].
pub mod fill;
mod trigger;
pub mod worker;

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::functions::check_interrupts;

/// One batch of bge_backfill, in the caller's transaction (the procedure commits after it):
/// rows past `after` in ctid order, skipping `skip`. Not meant to be called directly.
#[allow(clippy::type_complexity)]
#[pg_extern(volatile, parallel_unsafe)]
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
    let embedding = fill::Embedding::of_session(model);
    let batch = fill::fill_batch(tbl, source, target, &embedding, max_rows.max(1) as usize, Some(after), &skip, &mut check_interrupts);
    let failed_ctids = batch.failed.iter().map(|f| f.ctid.clone()).collect();
    let failed = batch.failed.iter().map(|f| format!("{}: {}", f.key, f.error)).collect();
    TableIterator::once((batch.rows as i32, batch.tokens as i64, batch.last_ctid, failed_ctids, failed))
}

/// bge_backfill commits after every batch: refuse, before any work, to run where it cannot.
#[pg_extern(volatile, parallel_unsafe)]
fn bge_backfill_check_transaction() {
    // SAFETY: a plain read of this backend's transaction state.
    if unsafe { pg_sys::IsTransactionBlock() } {
        crate::errors::raise_with(
            pgrx::PgSqlErrorCode::ERRCODE_ACTIVE_SQL_TRANSACTION,
            "bge_backfill cannot run inside a transaction block".into(),
            "It commits after every batch: CALL it on its own, outside BEGIN ... COMMIT.",
        );
    }
}

/// Starts this database's vectorizer worker unless it runs; returns its pid (NULL when it
/// could not start, with a WARNING saying why).
#[pg_extern(volatile, parallel_unsafe)]
fn bge_vectorizer_start() -> Option<i32> {
    worker::start_for_this_database()
}
