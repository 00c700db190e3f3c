//! Parallel plans for embedding scans of small tables.
//!
//! PostgreSQL plans no parallel scan of a table under min_parallel_table_scan_size (8 MB), a
//! rule made for cheap rows; but a table of a few thousand passages costs seconds to embed, and
//! one process per core beats one process handing batch-1 work to threads. So when a query
//! level computes something expensive per row (the COSTs in sql/pg_bge.sql), this hook offers
//! the planner a partial sequential scan of such a table as well; the planner still chooses by
//! cost. It does so only where PostgreSQL itself would plan a parallel sequential scan of a
//! large enough table (see `postgres_would_scan_in_parallel`), so a plan it adds returns what
//! the serial plan returns. It runs only once the library is loaded: `bge_planner_support`, attached to the
//! embedding functions, loads it while the planner simplifies expressions, before any scan is
//! planned.
use pgrx::pg_sys;
use pgrx::prelude::*;

/// Per-row cost (in seq_page_cost units) above which a scan is worth parallelising whatever
/// the table's size: 10 is 4,000 cpu_operator_cost, a fraction of one embedding.
const EXPENSIVE_PER_ROW: f64 = 10.0;

static mut PREVIOUS: pg_sys::set_rel_pathlist_hook_type = None;

pub fn init() {
    // SAFETY: _PG_init runs once per process, on the main thread, before any planning.
    unsafe {
        PREVIOUS = pg_sys::set_rel_pathlist_hook;
        pg_sys::set_rel_pathlist_hook = Some(set_rel_pathlist);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn set_rel_pathlist(root: *mut pg_sys::PlannerInfo, rel: *mut pg_sys::RelOptInfo, rti: pg_sys::Index, rte: *mut pg_sys::RangeTblEntry) {
    // SAFETY: the planner passes valid pointers for the duration of the call.
    unsafe {
        if let Some(previous) = PREVIOUS {
            previous(root, rel, rti, rte);
        }
        if !postgres_would_scan_in_parallel(root, rel, rte) {
            return;
        }
        let r = &*rel;
        // Only where PostgreSQL itself declined (no partial path, no parallel_workers reloption).
        if !r.partial_pathlist.is_null() || r.rel_parallel_workers != -1 || pg_sys::max_parallel_workers_per_gather <= 0 {
            return;
        }
        let mut target = pg_sys::QualCost { startup: 0.0, per_tuple: 0.0 };
        pg_sys::cost_qual_eval_node(&mut target, (*(*root).parse).targetList as *mut pg_sys::Node, root);
        if target.per_tuple + r.baserestrictcost.per_tuple < EXPENSIVE_PER_ROW {
            return;
        }
        // One process per core: the leader and cores - 1 workers.
        let workers = (pg_sys::max_parallel_workers_per_gather as usize).min(bge_engine::threads::available().saturating_sub(1)).max(1);
        let path = pg_sys::create_seqscan_path(root, rel, std::ptr::null_mut(), workers as i32);
        pg_sys::add_partial_path(rel, path);
    }
}

/// Whether PostgreSQL itself would consider a parallel sequential scan of `rel` were it large
/// enough: the conditions of set_rel_pathlist, set_plain_rel_pathlist and
/// set_rel_consider_parallel (src/backend/optimizer/path/allpaths.c). The hook adds its partial
/// path only where they hold, so it changes which plan is cheapest, never what a query returns.
///
/// # Safety
/// Pointers as the planner passes them to set_rel_pathlist_hook.
unsafe fn postgres_would_scan_in_parallel(root: *mut pg_sys::PlannerInfo, rel: *mut pg_sys::RelOptInfo, rte: *mut pg_sys::RangeTblEntry) -> bool {
    // SAFETY: valid for the duration of the hook (see above).
    unsafe {
        let (r, e) = (&*rel, &*rte);
        // The whole query may run in parallel mode: false for a cursor, anything but a plain
        // SELECT (so also WHERE CURRENT OF), SELECT FOR UPDATE/SHARE (row marks), a
        // parallel-unsafe function anywhere in the query, a query planned inside a parallel
        // worker, or max_parallel_workers_per_gather = 0 (standard_planner).
        if (*root).glob.is_null() || !(*(*root).glob).parallelModeOK {
            return false;
        }
        // A plain table scanned by itself: set_plain_rel_pathlist's case. Not a partition or an
        // inheritance child (other member rels), not an inheritance parent (rte->inh: its paths
        // are an Append of its children, and a scan of the parent table would miss their
        // rows), not a partitioned, foreign or other relkind, and not TABLESAMPLE (PostgreSQL
        // plans only a sample scan there: a sequential scan would return every row).
        let plain_table = r.reloptkind == pg_sys::RelOptKind::RELOPT_BASEREL
            && r.rtekind == pg_sys::RTEKind::RTE_RELATION
            && e.rtekind == pg_sys::RTEKind::RTE_RELATION
            && e.relkind == pg_sys::RELKIND_RELATION as std::ffi::c_char
            && !e.inh
            && e.tablesample.is_null();
        if !plain_table {
            return false;
        }
        // Proved empty (contradictory quals, constraint exclusion): its only path is a dummy.
        if pg_sys::is_dummy_rel(rel) {
            return false;
        }
        // set_rel_consider_parallel: false for a temporary table (workers cannot read the
        // leader's local buffers), for quals that are not parallel-safe (row-level security
        // and security-barrier quals included) and for outputs that are not.
        if !r.consider_parallel {
            return false;
        }
        // The same rule for temporary tables, checked again: their rows are in local buffers.
        if pg_sys::get_rel_persistence(e.relid) == pg_sys::RELPERSISTENCE_TEMP as std::ffi::c_char {
            return false;
        }
        // set_plain_rel_pathlist: no partial path for a rel with LATERAL references (its scan
        // needs the outer rel's values: a parameterized path).
        r.lateral_relids.is_null()
    }
}

/// Planner support function of the embedding functions. It answers no request (NULL: nothing
/// to simplify or estimate); being called loads the library, which installs the hook above in
/// time for the query being planned.
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn bge_planner_support(_fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    pg_sys::Datum::from(0usize)
}

#[no_mangle]
pub extern "C" fn pg_finfo_bge_planner_support() -> &'static pg_sys::Pg_finfo_record {
    const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}
