//! One batch of filling a table's embedding column: the step bge_backfill repeats (committing
//! after each) and the vectorizer worker runs per table. In the caller's transaction it locks up
//! to `max_rows` rows whose target is NULL and source is not (FOR NO KEY UPDATE SKIP LOCKED: a
//! writer is never waited for, and waits at most for the rows of this batch), tokenises each
//! (a text the model rejects fails alone), embeds them in one engine call (the model server's
//! when it runs) and writes the vectors back by ctid, which the row locks keep stable.
use bge_engine::tokenize::Encoded;
use bge_engine::TextRole;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi::quote_identifier;

use super::owner::{SettingsScope, UserCodeTimer};
use crate::compute::Call;
use crate::errors::OrRaise;

/// Most bytes of text one batch reads (at least one row's, whatever its size).
const BATCH_BYTES: i64 = 64 << 20;

/// A row whose text failed alone.
pub struct FailedRow {
    pub ctid: String,
    pub xmin: String,
    pub key: String,
    pub error: String,
}

#[derive(Default)]
pub struct Batch {
    /// Rows locked and filled, and their tokens.
    pub rows: usize,
    pub tokens: usize,
    /// Rows this batch locked (filled, failed, or left for the next batch by BATCH_BYTES).
    pub fetched: usize,
    /// The highest ctid fetched; None when no row was left to fetch.
    pub last_ctid: Option<String>,
    pub failed: Vec<FailedRow>,
}

/// Fills one batch of `table`. `after`: only rows past this ctid (bge_backfill's position in its
/// pass); `skip`: ctids not to try again; `timer` runs while the table's own code can (the
/// batch's queries), not while pg_bge computes. The caller runs it as the table's owner
/// (owner::run_as).
#[allow(clippy::too_many_arguments)]
pub fn fill_batch(
    table: pg_sys::Oid,
    source: &str,
    target: &str,
    embedding: &Call,
    max_rows: usize,
    after: Option<&str>,
    skip: &[String],
    timer: &mut UserCodeTimer,
    interrupt: &mut dyn FnMut(),
) -> Batch {
    let (src, tgt) = (quote_identifier(source), quote_identifier(target));
    // A pass over the table must be a scan in ctid order (a TID range scan, or the vectorizer's
    // partial index, which keeps equal keys in heap order), never a sequential scan restarting
    // at the first block for every batch.
    let plan = SettingsScope::enter();
    plan.set(c"enable_seqscan", c"off");
    let rel = qualified_name(table);
    Spi::connect_mut(|client| {
        let key = key_expression(client, table);
        let mut args = vec![skip.to_vec().into()];
        let position = match after {
            Some(ctid) => {
                args.push(ctid.into());
                "AND ctid OPERATOR(pg_catalog.>) $2::pg_catalog.tid"
            }
            None => "",
        };
        let query = format!(
            "SELECT ctid::pg_catalog.text, xmin::pg_catalog.text, {key}, pg_catalog.octet_length({src})::pg_catalog.int8 FROM {rel} \
             WHERE {tgt} IS NULL AND {src} IS NOT NULL AND ctid OPERATOR(pg_catalog.<>) ALL($1::pg_catalog.tid[]) {position} \
             LIMIT {max_rows} FOR NO KEY UPDATE SKIP LOCKED"
        );
        timer.resume();
        let locked: Vec<(String, String, String, i64)> = client
            .update(&query, None, &args)
            .or_raise()
            .map(|row| {
                let text = |i: usize| row.get::<String>(i).ok().flatten().unwrap_or_default();
                (text(1), text(2), text(3), row.get::<i64>(4).ok().flatten().unwrap_or(0))
            })
            .collect();
        // The texts of as many locked rows as fit BATCH_BYTES (at least one): the rest stay
        // NULL for the next batch, so a table of huge texts cannot make a batch huge.
        let mut bytes = 0i64;
        let kept = locked.iter().take_while(|r| {
            let first = bytes == 0;
            bytes = bytes.saturating_add(r.3.max(1));
            first || bytes <= BATCH_BYTES
        });
        let ctids: Vec<String> = kept.map(|r| r.0.clone()).collect();
        let mut texts: std::collections::HashMap<String, String> = client
            .select(
                &format!("SELECT ctid::pg_catalog.text, {src}::pg_catalog.text FROM {rel} WHERE ctid OPERATOR(pg_catalog.=) ANY($1::pg_catalog.tid[])"),
                None,
                &[ctids.clone().into()],
            )
            .or_raise()
            .filter_map(|row| Some((row.get::<String>(1).ok()??, row.get::<String>(2).ok()??)))
            .collect();
        timer.pause();
        let fetched: Vec<(String, String, String, String)> = locked
            .iter()
            .take(ctids.len())
            .map(|(ctid, xmin, key, _)| (ctid.clone(), xmin.clone(), key.clone(), texts.remove(ctid).unwrap_or_default()))
            .collect();
        let frontend = embedding.frontend();
        let mut good: Vec<(String, Encoded)> = Vec::new();
        let mut failed = Vec::new();
        for (ctid, xmin, key, text) in &fetched {
            match frontend.encode(text, TextRole::Passage, embedding.opts.truncate, interrupt) {
                Ok(encoded) => good.push((ctid.clone(), encoded)),
                // Stored where the table's readers see it: no server paths.
                Err(e) => failed.push(FailedRow { ctid: ctid.clone(), xmin: xmin.clone(), key: key.clone(), error: crate::errors::without_model_dir(&e.to_string()) }),
            }
        }
        let last_ctid = fetched.iter().map(|r| r.0.as_str()).max_by_key(|c| parse_tid(c)).map(str::to_string);
        let encoded: Vec<Encoded> = good.iter().map(|(_, e)| e.clone()).collect();
        let tokens = encoded.iter().map(|e| e.ids.len()).sum();
        let vectors = if encoded.is_empty() { Vec::new() } else { embedding.dense_encoded(&encoded, interrupt) };
        if !vectors.is_empty() {
            let update = client
                .prepare_mut(
                    &format!("UPDATE {rel} SET {tgt} = $1 WHERE ctid OPERATOR(pg_catalog.=) $2::pg_catalog.tid"),
                    &[pg_sys::FLOAT4ARRAYOID.into(), pg_sys::TEXTOID.into()],
                )
                .or_raise();
            timer.resume();
            for ((ctid, _), vector) in good.iter().zip(vectors) {
                client.update(&update, None, &[vector.into(), ctid.as_str().into()]).or_raise();
            }
            timer.pause();
        }
        Batch { rows: good.len(), tokens, fetched: locked.len(), last_ctid, failed }
    })
}

/// The table's name as SQL text, schema-qualified when the search path would not find it.
pub fn qualified_name(table: pg_sys::Oid) -> String {
    super::owner::select_one::<String>("SELECT $1::pg_catalog.regclass::pg_catalog.text", &[table.into()]).or_raise().unwrap_or_else(|| u32::from(table).to_string())
}

/// SQL naming a row for people: its primary key ("id=42"), else its ctid.
fn key_expression(client: &pgrx::spi::SpiClient<'_>, table: pg_sys::Oid) -> String {
    let columns: Vec<String> = client
        .select(
            "SELECT a.attname::pg_catalog.text FROM pg_catalog.pg_index i, pg_catalog.unnest(i.indkey) WITH ORDINALITY k(attnum, n) \
             JOIN pg_catalog.pg_attribute a ON a.attnum OPERATOR(pg_catalog.=) k.attnum \
             WHERE i.indrelid OPERATOR(pg_catalog.=) $1 AND i.indisprimary AND a.attrelid OPERATOR(pg_catalog.=) $1 ORDER BY k.n",
            None,
            &[table.into()],
        )
        .or_raise()
        .filter_map(|row| row.get::<String>(1).ok().flatten())
        .collect();
    if columns.is_empty() {
        return "'ctid=' OPERATOR(pg_catalog.||) ctid::pg_catalog.text".into();
    }
    let parts: Vec<String> =
        columns.iter().map(|c| format!("{} OPERATOR(pg_catalog.||) {}::pg_catalog.text", pgrx::spi::quote_literal(format!("{c}=")), quote_identifier(c))).collect();
    format!("pg_catalog.concat_ws(', ', {})", parts.join(", "))
}

/// "(block,offset)" as a sortable pair.
fn parse_tid(tid: &str) -> (u64, u64) {
    let inner = tid.trim_start_matches('(').trim_end_matches(')');
    let mut parts = inner.split(',').map(|p| p.trim().parse::<u64>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::parse_tid;

    #[test]
    fn tids_sort_by_block_then_offset() {
        assert!(parse_tid("(10,2)") > parse_tid("(9,300)"));
        assert!(parse_tid("(0,3)") > parse_tid("(0,2)"));
    }
}
