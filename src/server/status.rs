//! bge_server_status(): the model server's state and counters since it (re)started.
use std::sync::atomic::Ordering;

use pgrx::prelude::*;
use pgrx::JsonB;

use super::{client, header, FETCH, RESULT, RUNNING, SEND_MORE, SUBMITTED};

#[allow(clippy::type_complexity)]
#[pg_extern(volatile, parallel_safe)]
fn bge_server_status() -> TableIterator<
    'static,
    (
        name!(running, bool),
        name!(pid, Option<i32>),
        name!(started_at, Option<TimestampWithTimeZone>),
        name!(uptime_s, Option<f64>),
        name!(slots, Option<i32>),
        name!(slot_bytes, Option<i64>),
        name!(queue_depth, Option<i32>),
        name!(in_flight, Option<i32>),
        name!(requests, Option<i64>),
        name!(batches, Option<i64>),
        name!(mean_batch_size, Option<f64>),
        name!(tokens, Option<i64>),
        name!(tokens_per_s, Option<f64>),
        name!(models, Option<JsonB>),
    ),
> {
    let Some(h) = header() else {
        // Not preloaded: every call computes in its own backend.
        return TableIterator::once((false, None, None, None, None, None, None, None, None, None, None, None, None, None));
    };
    let pid = h.worker_pid.load(Ordering::Acquire);
    let (mut queued, mut in_flight) = (0, 0);
    for i in 0..h.slot_count as usize {
        // SAFETY: the slot array lives for the server's life; a racy read of a state is fine.
        let slot = unsafe { &*h.slot(i) };
        // Queued: submitted (or arriving in pieces), or taken by the worker and waiting for
        // its turn in a batch; in flight: in the batch computing now, or its result handed back.
        match slot.state.load(Ordering::Acquire) {
            SUBMITTED | SEND_MORE => queued += 1,
            RUNNING if slot.computing.load(Ordering::Relaxed) == 0 => queued += 1,
            RUNNING | FETCH | RESULT => in_flight += 1,
            _ => {}
        }
    }
    let started = h.started_at.load(Ordering::Relaxed);
    // SAFETY: a plain call.
    let uptime_s = (started != 0).then(|| (unsafe { pg_sys::GetCurrentTimestamp() } - started) as f64 / 1e6);
    let (requests, batches, sequences, tokens) =
        (h.requests.load(Ordering::Relaxed), h.batches.load(Ordering::Relaxed), h.sequences.load(Ordering::Relaxed), h.tokens.load(Ordering::Relaxed));
    let models: Vec<serde_json::Value> = client::loaded_models()
        .into_iter()
        .map(|m| {
            serde_json::json!({
                "name": m.name, "dir": m.dir, "device": m.device, "isa": m.isa, "precision": m.precision,
                "resident_bytes": m.resident_bytes, "load_ms": m.load_ms,
            })
        })
        // The directory is a server path: superusers only (errors name it bge.model_dir).
        .map(|mut m| if unsafe { pg_sys::superuser() } { m } else { m.as_object_mut().map(|o| o.remove("dir")); m })
        .collect();
    TableIterator::once((
        pid != 0,
        (pid != 0).then_some(pid),
        (started != 0).then(|| TimestampWithTimeZone::try_from(started).ok()).flatten(),
        uptime_s,
        Some(h.slot_count as i32),
        Some(h.slot_bytes as i64),
        Some(queued),
        Some(in_flight),
        Some(requests as i64),
        Some(batches as i64),
        (batches > 0).then(|| sequences as f64 / batches as f64),
        Some(tokens as i64),
        uptime_s.filter(|&u| u > 0.0).map(|u| tokens as f64 / u),
        Some(JsonB(serde_json::Value::Array(models))),
    ))
}
