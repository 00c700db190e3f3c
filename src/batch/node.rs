//! The BGE Batch executor node (a custom scan). Its scan tuple is its child's row followed by
//! one column per batched call; it reads rows from its child into a batch (1, 2, 4, ... rows, so
//! a LIMIT above computes little more than it returns, up to MAX_ROWS or the text budget),
//! evaluates the calls' arguments, computes each group of rows with equal other arguments in
//! one engine call, then returns the rows one by one, projected by its target list. Rows whose
//! engine call failed are computed again one at a time as they are returned, by the call's own
//! expression, so an error is raised at the row that causes it, as without batching.
use std::ffi::{c_char, c_void, CStr};

use pgrx::pg_sys;
use pgrx::prelude::*;

use super::calls::{self, Computed, Kind, KeyArg};
use crate::compute::Call;

pub const NAME: &CStr = c"BGE Batch";

/// Most rows in one batch.
const MAX_ROWS: usize = 1024;
/// Text bytes in one batch, in bge.max_batch_tokens units: a few forward passes' worth, so the
/// engine's length-sorted passes stay full (at about four bytes per token).
const BYTES_PER_BATCH_TOKEN: usize = 16;

struct Methods<T>(T);
// SAFETY: read-only tables of C strings and function pointers.
unsafe impl<T> Sync for Methods<T> {}

static SCAN_METHODS: Methods<pg_sys::CustomScanMethods> =
    Methods(pg_sys::CustomScanMethods { CustomName: NAME.as_ptr(), CreateCustomScanState: Some(create_state) });

static EXEC_METHODS: Methods<pg_sys::CustomExecMethods> = Methods(pg_sys::CustomExecMethods {
    CustomName: NAME.as_ptr(),
    BeginCustomScan: Some(begin),
    ExecCustomScan: Some(exec),
    EndCustomScan: Some(end),
    ReScanCustomScan: Some(rescan),
    MarkPosCustomScan: None,
    RestrPosCustomScan: None,
    EstimateDSMCustomScan: None,
    InitializeDSMCustomScan: None,
    ReInitializeDSMCustomScan: None,
    InitializeWorkerCustomScan: None,
    ShutdownCustomScan: None,
    ExplainCustomScan: Some(explain),
});

pub fn scan_methods() -> *const pg_sys::CustomScanMethods {
    &SCAN_METHODS.0
}

/// Registered so a parallel worker can read plans that contain the node.
pub fn register() {
    // SAFETY: called once from _PG_init; the table is static.
    unsafe { pg_sys::RegisterCustomScanMethods(scan_methods()) }
}

#[repr(C)]
struct BatchState {
    css: pg_sys::CustomScanState,
    /// Owned here; freed by `end`, or by the query memory's reset callback on an ERROR.
    run: *mut Run,
}

/// One batched call of the node's scan tuple.
struct Site {
    kind: Kind,
    /// Argument expressions, over the child's row.
    args: Vec<*mut pg_sys::ExprState>,
    arg_is_bool: Vec<bool>,
    /// The whole call, for rows computed one at a time.
    whole: *mut pg_sys::ExprState,
    /// Rows of this batch by their other arguments.
    groups: Vec<Group>,
    values: Vec<Value>,
}

struct Group {
    key: Vec<KeyArg>,
    texts: Vec<String>,
    call: Option<Call>,
    results: Vec<Option<Computed>>,
}

enum Value {
    /// A strict function's NULL argument: NULL without a call.
    Null,
    /// The result at (group, index).
    Ready(usize, usize),
    /// The group's engine call failed: the row's own call computes it.
    OneByOne,
}

#[derive(Default)]
struct Stats {
    batches: u64,
    rows: u64,
    largest: u64,
    one_by_one: u64,
}

struct Run {
    sites: Vec<Site>,
    child_columns: usize,
    batch_memory: pg_sys::MemoryContext,
    row_slot: *mut pg_sys::TupleTableSlot,
    rows: Vec<pg_sys::MinimalTuple>,
    next: usize,
    want: usize,
    child_done: bool,
    stats: Stats,
}

impl Run {
    /// Back to the first row: an empty batch, batches growing from one row again.
    fn restart(&mut self) {
        self.rows.clear();
        for site in &mut self.sites {
            site.groups.clear();
            site.values.clear();
        }
        self.next = 0;
        self.want = 1;
        self.child_done = false;
        // SAFETY: the batch's memory holds only the copied rows, dropped above.
        unsafe { pg_sys::MemoryContextReset(self.batch_memory) };
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn create_state(cscan: *mut pg_sys::CustomScan) -> *mut pg_sys::Node {
    // SAFETY: palloc0 of the state, tagged as PostgreSQL's CustomScanState (ExecInitCustomScan
    // fills in the rest).
    unsafe {
        let state = pg_sys::palloc0(std::mem::size_of::<BatchState>()) as *mut BatchState;
        (*state).css.ss.ps.type_ = pg_sys::NodeTag::T_CustomScanState;
        (*state).css.flags = (*cscan).flags;
        (*state).css.methods = &EXEC_METHODS.0;
        state as *mut pg_sys::Node
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn begin(node: *mut pg_sys::CustomScanState, estate: *mut pg_sys::EState, eflags: i32) {
    // SAFETY: the executor passes the state create_state made, for a plan made by super::plan.
    unsafe {
        let state = node as *mut BatchState;
        let ps = &mut (*node).ss.ps;
        let cscan = ps.plan as *mut pg_sys::CustomScan;
        // The node never scans backward or restores a mark (the plan rewrite puts it only where
        // neither is asked), so its child need not either.
        let child_flags = eflags & !((pg_sys::EXEC_FLAG_BACKWARD | pg_sys::EXEC_FLAG_MARK) as i32);
        ps.lefttree = pg_sys::ExecInitNode((*cscan).scan.plan.lefttree, estate, child_flags);
        let child_columns = super::list_len((*(*cscan).scan.plan.lefttree).targetlist);
        let mut sites = Vec::new();
        for (i, &entry) in super::list_ptrs::<pg_sys::TargetEntry>((*cscan).custom_scan_tlist).iter().enumerate() {
            if i < child_columns {
                continue;
            }
            let call = (*entry).expr as *mut pg_sys::FuncExpr;
            let args = super::list_ptrs::<pg_sys::Expr>((*call).args);
            let types: Vec<pg_sys::Oid> = args.iter().map(|&a| pg_sys::exprType(a as *const pg_sys::Node)).collect();
            let Some(kind) = Kind::of((*call).funcid, &types) else {
                error!("BGE Batch: function {} is not one pg_bge batches", u32::from((*call).funcid));
            };
            sites.push(Site {
                kind,
                args: args.iter().map(|&a| pg_sys::ExecInitExpr(a, ps)).collect(),
                arg_is_bool: types.iter().map(|&t| t == pg_sys::BOOLOID).collect(),
                // Also the function's EXECUTE permission check, as for a call per row.
                whole: pg_sys::ExecInitExpr(call as *mut pg_sys::Expr, ps),
                groups: Vec::new(),
                values: Vec::new(),
            });
        }
        let query_memory = (*estate).es_query_cxt;
        let batch_memory = pg_sys::AllocSetContextCreateInternal(query_memory, c"BGE Batch".as_ptr(), 0, 8 * 1024, 8 * 1024 * 1024);
        let row_slot = pg_sys::ExecInitExtraTupleSlot(estate, pg_sys::ExecGetResultType(ps.lefttree), &pg_sys::TTSOpsMinimalTuple);
        (*state).run = Box::into_raw(Box::new(Run {
            sites,
            child_columns,
            batch_memory,
            row_slot,
            rows: Vec::new(),
            next: 0,
            want: 1,
            child_done: false,
            stats: Stats::default(),
        }));
        super::on_reset(query_memory, free_run, state as *mut c_void);
    }
}

/// Drops the node's Rust state (on `end`, or when an ERROR frees the query's memory).
unsafe extern "C-unwind" fn free_run(arg: *mut c_void) {
    // SAFETY: `arg` is the BatchState whose memory is being reset; run is ours or null.
    unsafe {
        let state = arg as *mut BatchState;
        if !(*state).run.is_null() {
            drop(Box::from_raw((*state).run));
            (*state).run = std::ptr::null_mut();
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn exec(node: *mut pg_sys::CustomScanState) -> *mut pg_sys::TupleTableSlot {
    // SAFETY: the state begin() initialised.
    unsafe {
        let state = node as *mut BatchState;
        let run = &mut *(*state).run;
        loop {
            if run.next < run.rows.len() {
                let row = run.next;
                run.next += 1;
                return emit(node, run, row);
            }
            if run.child_done {
                return std::ptr::null_mut();
            }
            fill(node, run);
        }
    }
}

/// Reads the next batch of rows from the child and computes its calls.
unsafe fn fill(node: *mut pg_sys::CustomScanState, run: &mut Run) {
    // SAFETY: called from exec with begin()'s state.
    unsafe {
        let want = run.want;
        run.restart();
        run.want = (want * 2).min(MAX_ROWS);
        let econtext = (*node).ss.ps.ps_ExprContext;
        let child = (*node).ss.ps.lefttree;
        let budget = crate::gucs::max_batch_tokens().saturating_mul(BYTES_PER_BATCH_TOKEN);
        let mut bytes = 0usize;
        while run.rows.len() < want && bytes < budget {
            let slot = pg_sys::ExecProcNode(child);
            if slot.is_null() || (*slot).tts_flags & pg_sys::TTS_FLAG_EMPTY as u16 != 0 {
                run.child_done = true;
                break;
            }
            let old = pg_sys::MemoryContextSwitchTo(run.batch_memory);
            run.rows.push(pg_sys::ExecCopySlotMinimalTuple(slot));
            pg_sys::MemoryContextSwitchTo(old);
            (*econtext).ecxt_outertuple = slot;
            for site in &mut run.sites {
                bytes += read_args(site, econtext);
            }
            pg_sys::MemoryContextReset((*econtext).ecxt_per_tuple_memory);
        }
        if run.rows.is_empty() {
            return;
        }
        for site in &mut run.sites {
            for group in &mut site.groups {
                let texts: Vec<&str> = group.texts.iter().map(String::as_str).collect();
                let (call, result) = calls::compute(site.kind, &group.key, &texts);
                group.call = Some(call);
                match result {
                    Ok(values) if values.len() == texts.len() => group.results = values.into_iter().map(Some).collect(),
                    _ => group.results.clear(),
                }
                group.texts = Vec::new();
            }
            for value in &mut site.values {
                if let Value::Ready(g, _) = *value {
                    if site.groups[g].results.is_empty() {
                        *value = Value::OneByOne;
                        run.stats.one_by_one += 1;
                    }
                }
            }
        }
        let rows = run.rows.len() as u64;
        run.stats.batches += 1;
        run.stats.rows += rows;
        run.stats.largest = run.stats.largest.max(rows);
    }
}

/// Evaluates one call's arguments over the child's row in `econtext`, files the row under its
/// group, and returns the bytes of its text.
unsafe fn read_args(site: &mut Site, econtext: *mut pg_sys::ExprContext) -> usize {
    // SAFETY: the site's expressions were initialised for this node; the row is in econtext.
    unsafe {
        let mut text = None;
        let mut key = Vec::new();
        let mut null = false;
        // Every argument, as a call would (a strict function checks for NULLs after them all).
        for (i, (&arg, &is_bool)) in site.args.iter().zip(&site.arg_is_bool).enumerate() {
            let mut isnull = false;
            let datum = pg_sys::ExecEvalExprSwitchContext(arg, econtext, &mut isnull);
            if isnull || null {
                null = true;
                continue;
            }
            if is_bool {
                key.push(KeyArg::Bool(bool::from_datum(datum, false).unwrap_or_default()));
            } else {
                let value = String::from_datum(datum, false).unwrap_or_default();
                if i == site.kind.text_arg() {
                    text = Some(value);
                } else {
                    key.push(KeyArg::Text(value));
                }
            }
        }
        let text = match (null, text) {
            (false, Some(text)) => text,
            _ => {
                site.values.push(Value::Null);
                return 0;
            }
        };
        let bytes = text.len();
        let g = match site.groups.iter().position(|g| g.key == key) {
            Some(g) => g,
            None => {
                site.groups.push(Group { key, texts: Vec::new(), call: None, results: Vec::new() });
                site.groups.len() - 1
            }
        };
        let group = &mut site.groups[g];
        group.texts.push(text);
        site.values.push(Value::Ready(g, group.texts.len() - 1));
        bytes
    }
}

/// Returns batch row `row`: the child's columns and the calls' results, projected.
unsafe fn emit(node: *mut pg_sys::CustomScanState, run: &mut Run, row: usize) -> *mut pg_sys::TupleTableSlot {
    // SAFETY: `row` is a row of the current batch; the slots are begin()'s.
    unsafe {
        let econtext = (*node).ss.ps.ps_ExprContext;
        pg_sys::MemoryContextReset((*econtext).ecxt_per_tuple_memory);
        let row_slot = run.row_slot;
        pg_sys::ExecStoreMinimalTuple(run.rows[row], row_slot, false);
        pg_sys::slot_getallattrs(row_slot);
        let scan = (*node).ss.ss_ScanTupleSlot;
        pg_sys::ExecClearTuple(scan);
        let n = run.child_columns;
        let values = std::slice::from_raw_parts_mut((*scan).tts_values, n + run.sites.len());
        let nulls = std::slice::from_raw_parts_mut((*scan).tts_isnull, n + run.sites.len());
        values[..n].copy_from_slice(std::slice::from_raw_parts((*row_slot).tts_values, n));
        nulls[..n].copy_from_slice(std::slice::from_raw_parts((*row_slot).tts_isnull, n));
        for (j, site) in run.sites.iter_mut().enumerate() {
            let (value, isnull) = match site.values[row] {
                Value::Null => (pg_sys::Datum::from(0usize), true),
                Value::Ready(g, i) => {
                    let group = &mut site.groups[g];
                    let computed = group.results[i].take().expect("each result is returned once");
                    let old = pg_sys::MemoryContextSwitchTo((*econtext).ecxt_per_tuple_memory);
                    let datum = calls::datum(site.kind, &group.key, group.call.as_ref().expect("computed group"), computed);
                    pg_sys::MemoryContextSwitchTo(old);
                    (datum, false)
                }
                Value::OneByOne => {
                    (*econtext).ecxt_outertuple = row_slot;
                    let mut isnull = false;
                    let datum = pg_sys::ExecEvalExprSwitchContext(site.whole, econtext, &mut isnull);
                    (datum, isnull)
                }
            };
            values[n + j] = value;
            nulls[n + j] = isnull;
        }
        pg_sys::ExecStoreVirtualTuple(scan);
        let projection = (*node).ss.ps.ps_ProjInfo;
        if projection.is_null() {
            return scan;
        }
        (*econtext).ecxt_scantuple = scan;
        pg_sys::ExecProject(projection)
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn rescan(node: *mut pg_sys::CustomScanState) {
    // SAFETY: begin()'s state.
    unsafe {
        let state = node as *mut BatchState;
        (*(*state).run).restart();
        let child = (*node).ss.ps.lefttree;
        // A child whose parameters changed is rescanned by its next ExecProcNode.
        if (*child).chgParam.is_null() {
            pg_sys::ExecReScan(child);
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn end(node: *mut pg_sys::CustomScanState) {
    // SAFETY: begin()'s state.
    unsafe {
        pg_sys::ExecEndNode((*node).ss.ps.lefttree);
        free_run(node as *mut c_void);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn explain(node: *mut pg_sys::CustomScanState, ancestors: *mut pg_sys::List, es: *mut pg_sys::ExplainState) {
    // SAFETY: begin()'s state; EXPLAIN's own deparse context.
    unsafe {
        let cscan = (*node).ss.ps.plan as *mut pg_sys::CustomScan;
        let context = pg_sys::set_deparse_context_plan((*es).deparse_cxt, cscan as *mut pg_sys::Plan, ancestors);
        let child_columns = super::list_len((*(*cscan).scan.plan.lefttree).targetlist);
        let mut calls = std::ptr::null_mut();
        for &entry in super::list_ptrs::<pg_sys::TargetEntry>((*cscan).custom_scan_tlist).iter().skip(child_columns) {
            let text = pg_sys::deparse_expression((*entry).expr as *mut pg_sys::Node, context, (*es).verbose, false);
            calls = pg_sys::lappend(calls, text as *mut c_void);
        }
        pg_sys::ExplainPropertyList(c"Batched Calls".as_ptr(), calls, es);
        let run = (*(node as *mut BatchState)).run;
        if (*es).analyze && !run.is_null() {
            let stats = &(*run).stats;
            let property = |label: &CStr, value: u64| pg_sys::ExplainPropertyInteger(label.as_ptr(), std::ptr::null::<c_char>(), value as i64, es);
            property(c"Batches", stats.batches);
            property(c"Batched Rows", stats.rows);
            property(c"Largest Batch", stats.largest);
            if stats.one_by_one > 0 {
                property(c"Rows Computed One by One", stats.one_by_one);
            }
        }
    }
}
