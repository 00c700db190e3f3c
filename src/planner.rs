//! Parallel plans for embedding scans of small tables.
//!
//! PostgreSQL plans no parallel scan of a table under min_parallel_table_scan_size (8 MB), a
//! rule made for cheap rows; but a table of a few thousand passages costs seconds to embed, and
//! one process per core beats one process handing batch-1 work to threads. So when a query
//! level computes something expensive per row (the COSTs in sql/pg_bge.sql), this hook offers
//! the planner a partial sequential scan of such a table as well; the planner still chooses by
//! cost. It runs only once the library is loaded: `bge_planner_support`, attached to the
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
        let (r, e) = (&*rel, &*rte);
        let plain_table = r.reloptkind == pg_sys::RelOptKind::RELOPT_BASEREL
            && e.rtekind == pg_sys::RTEKind::RTE_RELATION
            && e.relkind == pg_sys::RELKIND_RELATION as std::ffi::c_char;
        // Only where PostgreSQL itself declined (no partial path, no parallel_workers reloption).
        if !plain_table || !r.consider_parallel || !r.partial_pathlist.is_null() || r.rel_parallel_workers != -1 || pg_sys::max_parallel_workers_per_gather <= 0 {
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
