//! Where BGE Batch nodes go: a rewrite of each statement's finished plan as the executor starts
//! it (so also the first statement of a session, which loads pg_bge while it is planned, and
//! cached plans under the setting in force when they run). The rewrite works on a copy.
//!
//! Two shapes. A node that projects pg_bge calls in its target list (a scan, a join, a Result,
//! an aggregate's per-group list; also under ModifyTable for UPDATE and INSERT ... SELECT) keeps
//! only the plain values its list reads (Vars, aggregates); a BGE Batch node above it computes
//! the calls and evaluates the original list, volatile functions included, once per row as the
//! row is returned. An aggregate whose arguments call pg_bge (`count(bge_embed(body))`) gets a
//! BGE Batch node between it and its input, and its arguments read the batch's columns.
//!
//! Only calls that every row evaluates are batched: not those under CASE, COALESCE, AND/OR,
//! a FILTER clause or a subplan. Nor where a volatile function would run for rows read ahead of
//! those returned: in the calls' arguments, in quals, in the input's plan.
use std::ffi::c_void;

use pgrx::pg_sys;
use pgrx::prelude::*;

use super::calls::Kind;
use super::{list_len, list_ptrs};

static mut PREVIOUS_START: pg_sys::ExecutorStart_hook_type = None;
static mut PREVIOUS_END: pg_sys::ExecutorEnd_hook_type = None;

thread_local! {
    /// The rewritten copies of plans the executor runs now, with the plans they replace.
    static ORIGINALS: std::cell::RefCell<Vec<(*mut pg_sys::PlannedStmt, *mut pg_sys::PlannedStmt)>> = const { std::cell::RefCell::new(Vec::new()) };
}

pub fn init() {
    // SAFETY: _PG_init runs once per process, on the main thread.
    unsafe {
        PREVIOUS_START = pg_sys::ExecutorStart_hook;
        pg_sys::ExecutorStart_hook = Some(executor_start);
        PREVIOUS_END = pg_sys::ExecutorEnd_hook;
        pg_sys::ExecutorEnd_hook = Some(executor_end);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn executor_start(query_desc: *mut pg_sys::QueryDesc, eflags: i32) {
    // SAFETY: the executor's own arguments. A parallel worker runs the leader's rewritten plan.
    unsafe {
        let mut memory = std::ptr::null_mut();
        if crate::gucs::executor_batching() && pg_sys::ParallelWorkerNumber < 0 {
            let original = (*query_desc).plannedstmt;
            if let Some((copy, copy_memory)) = batched(original, eflags) {
                (*query_desc).plannedstmt = copy;
                memory = copy_memory;
                ORIGINALS.with(|o| o.borrow_mut().push((copy, original)));
            }
        }
        match PREVIOUS_START {
            Some(previous) => previous(query_desc, eflags),
            None => pg_sys::standard_ExecutorStart(query_desc, eflags),
        }
        // The copy lives as long as the executor's state (a SQL function starts its statements
        // again on every call, under memory that lasts as long as the calling query).
        if !memory.is_null() && !(*query_desc).estate.is_null() {
            pg_sys::MemoryContextSetParent(memory, (*(*query_desc).estate).es_query_cxt);
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn executor_end(query_desc: *mut pg_sys::QueryDesc) {
    // SAFETY: the executor's own argument. The original plan outlives the query; the copy goes
    // with the executor's state.
    unsafe {
        let copy = (*query_desc).plannedstmt;
        if let Some(original) = ORIGINALS.with(|o| o.borrow().iter().find(|(c, _)| *c == copy).map(|&(_, original)| original)) {
            (*query_desc).plannedstmt = original;
        }
        match PREVIOUS_END {
            Some(previous) => previous(query_desc),
            None => pg_sys::standard_ExecutorEnd(query_desc),
        }
    }
}

/// Forgets a copy when its memory goes (at the query's end, or when an ERROR frees it).
unsafe extern "C-unwind" fn forget_copy(copy: *mut c_void) {
    ORIGINALS.with(|o| o.borrow_mut().retain(|&(c, _)| c as *mut c_void != copy));
}

/// A copy of `stmt` with BGE Batch nodes, in memory of its own, or None where it has nothing to
/// batch.
unsafe fn batched(stmt: *mut pg_sys::PlannedStmt, eflags: i32) -> Option<(*mut pg_sys::PlannedStmt, pg_sys::MemoryContext)> {
    use pg_sys::CmdType::*;
    // SAFETY: a finished plan, valid while the executor runs it; the copy is made in a new
    // memory context, deleted again when nothing changed.
    unsafe {
        let command = (*stmt).commandType;
        if !matches!(command, CMD_SELECT | CMD_INSERT | CMD_UPDATE | CMD_DELETE) || !(*stmt).utilityStmt.is_null() {
            return None;
        }
        let roots = || std::iter::once((*stmt).planTree).chain(list_ptrs::<pg_sys::Plan>((*stmt).subplans));
        if !roots().any(|p| has_calls(p)) {
            return None;
        }
        // A scrollable cursor gets a Material above (the batch node reads forward only), which
        // would replay volatile functions' values where a rescan computes them again.
        let backward = eflags & pg_sys::EXEC_FLAG_BACKWARD as i32 != 0;
        if backward && roots().any(|p| volatile_in_tree(p)) {
            return None;
        }
        let memory = pg_sys::AllocSetContextCreateInternal(pg_sys::CurrentMemoryContext, c"BGE Batch plan".as_ptr(), 0, 8 * 1024, 8 * 1024 * 1024);
        let old = pg_sys::MemoryContextSwitchTo(memory);
        let copy = pg_sys::copyObjectImpl(stmt as *const c_void) as *mut pg_sys::PlannedStmt;
        let mut rewrite = Rewrite { next_id: 0, changed: false };
        for root in std::iter::once((*copy).planTree).chain(list_ptrs::<pg_sys::Plan>((*copy).subplans)) {
            rewrite.number(root);
        }
        (*copy).planTree = rewrite.plan((*copy).planTree, false);
        if !(*copy).subplans.is_null() {
            for i in 0..list_len((*copy).subplans) {
                let cell = (*(*copy).subplans).elements.add(i);
                (*cell).ptr_value = rewrite.plan((*cell).ptr_value as *mut pg_sys::Plan, false) as *mut c_void;
            }
        }
        if rewrite.changed && backward && !absorbs_backward((*copy).planTree) {
            (*copy).planTree = rewrite.material((*copy).planTree);
        }
        pg_sys::MemoryContextSwitchTo(old);
        if !rewrite.changed {
            pg_sys::MemoryContextDelete(memory);
            return None;
        }
        super::on_reset(memory, forget_copy, copy as *mut c_void);
        Some((copy, memory))
    }
}

/// Whether an expression a node evaluates per row (its target list, quals, a function scan's
/// functions, a VALUES list) calls a volatile function.
unsafe fn volatile_in_node(plan: *mut pg_sys::Plan, with_target_list: bool) -> bool {
    use pg_sys::NodeTag::*;
    // SAFETY: a plan node of the tag it carries.
    unsafe {
        let volatile = |list: *mut pg_sys::List| pg_sys::contain_volatile_functions(list as *mut pg_sys::Node);
        let own = match (*plan).type_ {
            T_FunctionScan => volatile((*(plan as *mut pg_sys::FunctionScan)).functions),
            T_ValuesScan => volatile((*(plan as *mut pg_sys::ValuesScan)).values_lists),
            T_NestLoop | T_MergeJoin | T_HashJoin => volatile((*(plan as *mut pg_sys::Join)).joinqual),
            _ => false,
        };
        own || volatile((*plan).qual) || (with_target_list && volatile((*plan).targetlist))
    }
}

/// Whether any node of the tree evaluates a volatile function per row.
unsafe fn volatile_in_tree(plan: *mut pg_sys::Plan) -> bool {
    // SAFETY: a plan tree.
    unsafe { volatile_in_node(plan, true) || children(plan).into_iter().any(|c| volatile_in_tree(c)) }
}

/// Whether any node of the tree has a pg_bge call in its target list (a cheap test before the
/// copy; the rewrite decides).
unsafe fn has_calls(plan: *mut pg_sys::Plan) -> bool {
    // SAFETY: a plan tree.
    unsafe {
        if plan.is_null() {
            return false;
        }
        let mut finder = Finder::new(Mode::Anywhere);
        walk((*plan).targetlist as *mut pg_sys::Node, &mut finder);
        !finder.calls.is_empty() || children(plan).into_iter().any(|c| has_calls(c))
    }
}

/// The child plans of `plan`.
unsafe fn children(plan: *mut pg_sys::Plan) -> Vec<*mut pg_sys::Plan> {
    use pg_sys::NodeTag::*;
    // SAFETY: a plan node of the tag it carries.
    unsafe {
        let mut out: Vec<*mut pg_sys::Plan> = [(*plan).lefttree, (*plan).righttree].into_iter().filter(|p| !p.is_null()).collect();
        match (*plan).type_ {
            T_Append => out.extend(list_ptrs((*(plan as *mut pg_sys::Append)).appendplans)),
            T_MergeAppend => out.extend(list_ptrs((*(plan as *mut pg_sys::MergeAppend)).mergeplans)),
            T_SubqueryScan => out.push((*(plan as *mut pg_sys::SubqueryScan)).subplan),
            T_CustomScan => out.extend(list_ptrs((*(plan as *mut pg_sys::CustomScan)).custom_plans)),
            T_BitmapAnd => out.extend(list_ptrs((*(plan as *mut pg_sys::BitmapAnd)).bitmapplans)),
            T_BitmapOr => out.extend(list_ptrs((*(plan as *mut pg_sys::BitmapOr)).bitmapplans)),
            _ => {}
        }
        out
    }
}

/// Whether a scrollable cursor's backward fetches stop at a node that keeps its rows (Sort,
/// Material) before they could reach a batch node.
unsafe fn absorbs_backward(mut plan: *mut pg_sys::Plan) -> bool {
    use pg_sys::NodeTag::*;
    // SAFETY: a plan tree.
    unsafe {
        loop {
            match (*plan).type_ {
                T_Sort | T_Material => return true,
                T_Limit | T_Result | T_Unique | T_LockRows if !(*plan).lefttree.is_null() => plan = (*plan).lefttree,
                _ => return false,
            }
        }
    }
}

struct Rewrite {
    next_id: i32,
    changed: bool,
}

impl Rewrite {
    /// Makes new nodes' plan_node_ids follow the tree's (parallel query and EXPLAIN key on them).
    unsafe fn number(&mut self, plan: *mut pg_sys::Plan) {
        // SAFETY: a plan tree.
        unsafe {
            if plan.is_null() {
                return;
            }
            self.next_id = self.next_id.max((*plan).plan_node_id + 1);
            for child in children(plan) {
                self.number(child);
            }
        }
    }

    /// `plan` with batch nodes in its tree. `keeps_marks`: the parent (a merge join's inner
    /// side) restores marks in it, which a batch node cannot do, so it stays as it is.
    unsafe fn plan(&mut self, plan: *mut pg_sys::Plan, keeps_marks: bool) -> *mut pg_sys::Plan {
        use pg_sys::NodeTag::*;
        // SAFETY: a plan tree in the copy, modified in place.
        unsafe {
            if plan.is_null() {
                return plan;
            }
            let tag = (*plan).type_;
            (*plan).lefttree = self.plan((*plan).lefttree, keeps_marks && tag == T_Result);
            (*plan).righttree = self.plan((*plan).righttree, tag == T_MergeJoin);
            let lists: Option<*mut *mut pg_sys::List> = match tag {
                T_Append => Some(&mut (*(plan as *mut pg_sys::Append)).appendplans),
                T_MergeAppend => Some(&mut (*(plan as *mut pg_sys::MergeAppend)).mergeplans),
                T_CustomScan => Some(&mut (*(plan as *mut pg_sys::CustomScan)).custom_plans),
                _ => None,
            };
            if let Some(list) = lists {
                for i in 0..list_len(*list) {
                    let cell = (**list).elements.add(i);
                    (*cell).ptr_value = self.plan((*cell).ptr_value as *mut pg_sys::Plan, false) as *mut c_void;
                }
            }
            if tag == T_SubqueryScan {
                let scan = plan as *mut pg_sys::SubqueryScan;
                (*scan).subplan = self.plan((*scan).subplan, false);
            }
            if tag == T_Agg {
                self.aggregate_arguments(plan as *mut pg_sys::Agg);
            }
            if keeps_marks || !projects(plan) {
                return plan;
            }
            self.projection(plan)
        }
    }

    /// Batches the calls in `agg`'s aggregate arguments: a batch node under it computes them,
    /// and the arguments read its columns.
    unsafe fn aggregate_arguments(&mut self, agg: *mut pg_sys::Agg) {
        // SAFETY: an Agg node of the copy.
        unsafe {
            let plan = agg as *mut pg_sys::Plan;
            let input = (*plan).lefttree;
            if input.is_null() || !(*agg).groupingSets.is_null() || !(*agg).chain.is_null() {
                return;
            }
            let mut finder = Finder::new(Mode::InAggregates);
            walk((*plan).targetlist as *mut pg_sys::Node, &mut finder);
            walk((*plan).qual as *mut pg_sys::Node, &mut finder);
            if finder.calls.is_empty() {
                return;
            }
            let inputs: Vec<*mut pg_sys::Node> = list_ptrs::<pg_sys::TargetEntry>((*input).targetlist).iter().map(|&e| (*e).expr as *mut pg_sys::Node).collect();
            let n = inputs.len();
            let mut scan_tlist = std::ptr::null_mut();
            for (k, &expr) in inputs.iter().enumerate() {
                scan_tlist = append_entry(scan_tlist, var_for(pg_sys::OUTER_VAR, k, expr) as *mut pg_sys::Expr);
            }
            for &call in &finder.calls {
                scan_tlist = append_entry(scan_tlist, pg_sys::copyObjectImpl(call as *const c_void) as *mut pg_sys::Expr);
            }
            let mut target = std::ptr::null_mut();
            for &entry in list_ptrs::<pg_sys::TargetEntry>(scan_tlist).iter() {
                let k = list_len(target);
                target = append_entry(target, var_for(pg_sys::INDEX_VAR, k, (*entry).expr as *mut pg_sys::Node) as *mut pg_sys::Expr);
            }
            let mut replace = Replace { calls: finder.calls, call_varno: pg_sys::OUTER_VAR, call_base: n, items: Vec::new(), item_varno: 0, in_aggregates_only: true, depth: 0 };
            (*plan).targetlist = replace.run((*plan).targetlist as *mut pg_sys::Node) as *mut pg_sys::List;
            (*plan).qual = replace.run((*plan).qual as *mut pg_sys::Node) as *mut pg_sys::List;
            (*plan).lefttree = self.node(input, scan_tlist, target, plan);
        }
    }

    /// Batches the calls in `plan`'s target list: `plan` keeps the plain values the list reads,
    /// and a batch node above it computes the calls and the list.
    unsafe fn projection(&mut self, plan: *mut pg_sys::Plan) -> *mut pg_sys::Plan {
        // SAFETY: a projecting node of the copy.
        unsafe {
            let tlist = (*plan).targetlist;
            let mut finder = Finder::new(Mode::OutsideAggregates);
            walk(tlist as *mut pg_sys::Node, &mut finder);
            // Volatile functions below the target list (quals, the input's own target lists)
            // would run for rows read ahead of those returned; subplans and set-returning
            // functions are evaluated where they are.
            if finder.calls.is_empty()
                || volatile_in_node(plan, false)
                || children(plan).into_iter().any(|c| volatile_in_tree(c))
                || pg_sys::contain_subplans(tlist as *mut pg_sys::Node)
                || pg_sys::expression_returns_set(tlist as *mut pg_sys::Node)
            {
                return plan;
            }
            let items = plain_values(tlist as *mut pg_sys::Node);
            let mut input_tlist = std::ptr::null_mut();
            let mut scan_tlist = std::ptr::null_mut();
            for (k, &item) in items.iter().enumerate() {
                input_tlist = append_entry(input_tlist, pg_sys::copyObjectImpl(item as *const c_void) as *mut pg_sys::Expr);
                scan_tlist = append_entry(scan_tlist, var_for(pg_sys::OUTER_VAR, k, item) as *mut pg_sys::Expr);
            }
            // The calls' arguments read the input's columns.
            let mut args = Replace { calls: Vec::new(), call_varno: 0, call_base: 0, items: items.clone(), item_varno: pg_sys::OUTER_VAR, in_aggregates_only: false, depth: 0 };
            for &call in &finder.calls {
                scan_tlist = append_entry(scan_tlist, args.run(call) as *mut pg_sys::Expr);
            }
            // The target list reads the scan tuple: the input's columns, then the calls.
            let mut target = Replace { calls: finder.calls, call_varno: pg_sys::INDEX_VAR, call_base: items.len(), items, item_varno: pg_sys::INDEX_VAR, in_aggregates_only: false, depth: 0 };
            let target = target.run(tlist as *mut pg_sys::Node) as *mut pg_sys::List;
            (*plan).targetlist = input_tlist;
            self.node(plan, scan_tlist, target, plan)
        }
    }

    /// Makes `p` a new node of type `tag` over `child`: its estimates, no quals, its own id.
    unsafe fn over(&mut self, p: &mut pg_sys::Plan, child: *mut pg_sys::Plan, tag: pg_sys::NodeTag) {
        // SAFETY: `child` is a plan node of the copy.
        unsafe {
            *p = *child;
        }
        p.type_ = tag;
        p.lefttree = child;
        p.righttree = std::ptr::null_mut();
        p.qual = std::ptr::null_mut();
        p.initPlan = std::ptr::null_mut();
        p.parallel_aware = false;
        p.async_capable = false;
        p.plan_node_id = self.next_id;
        self.next_id += 1;
    }

    /// A batch node over `input`, with the parameters of `input` and `uses` (whose expressions
    /// it took over).
    unsafe fn node(&mut self, input: *mut pg_sys::Plan, scan_tlist: *mut pg_sys::List, target: *mut pg_sys::List, uses: *mut pg_sys::Plan) -> *mut pg_sys::Plan {
        // SAFETY: plan nodes of the copy; the new node is palloc'd in the same memory.
        unsafe {
            let cscan = pg_sys::palloc0(std::mem::size_of::<pg_sys::CustomScan>()) as *mut pg_sys::CustomScan;
            let p = &mut (*cscan).scan.plan;
            self.over(p, input, pg_sys::NodeTag::T_CustomScan);
            p.targetlist = target;
            p.extParam = pg_sys::bms_union((*input).extParam, (*uses).extParam);
            p.allParam = pg_sys::bms_union((*input).allParam, (*uses).allParam);
            (*cscan).scan.scanrelid = 0;
            (*cscan).custom_scan_tlist = scan_tlist;
            (*cscan).methods = super::node::scan_methods();
            self.changed = true;
            cscan as *mut pg_sys::Plan
        }
    }

    /// A Material node over `top` that returns its rows as they are.
    unsafe fn material(&mut self, top: *mut pg_sys::Plan) -> *mut pg_sys::Plan {
        // SAFETY: the copy's top plan node.
        unsafe {
            let material = pg_sys::palloc0(std::mem::size_of::<pg_sys::Material>()) as *mut pg_sys::Material;
            let p = &mut (*material).plan;
            self.over(p, top, pg_sys::NodeTag::T_Material);
            p.extParam = pg_sys::bms_copy((*top).extParam);
            p.allParam = pg_sys::bms_copy((*top).allParam);
            let mut tlist = std::ptr::null_mut();
            for (k, &entry) in list_ptrs::<pg_sys::TargetEntry>((*top).targetlist).iter().enumerate() {
                let copy = pg_sys::flatCopyTargetEntry(entry);
                (*copy).expr = var_for(pg_sys::OUTER_VAR, k, (*entry).expr as *mut pg_sys::Node) as *mut pg_sys::Expr;
                tlist = pg_sys::lappend(tlist, copy as *mut c_void);
            }
            p.targetlist = tlist;
            material as *mut pg_sys::Plan
        }
    }
}

/// Node types whose target list is evaluated per row over their own input.
unsafe fn projects(plan: *mut pg_sys::Plan) -> bool {
    use pg_sys::NodeTag::*;
    // SAFETY: a plan node.
    unsafe {
        match (*plan).type_ {
            T_SeqScan | T_SampleScan | T_IndexScan | T_IndexOnlyScan | T_BitmapHeapScan | T_TidScan | T_TidRangeScan | T_SubqueryScan
            | T_FunctionScan | T_TableFuncScan | T_ValuesScan | T_CteScan | T_NamedTuplestoreScan | T_NestLoop | T_MergeJoin | T_HashJoin
            | T_Group => true,
            T_Result => !(*plan).lefttree.is_null(),
            T_Agg => {
                let agg = plan as *mut pg_sys::Agg;
                (*agg).groupingSets.is_null() && (*agg).chain.is_null()
            }
            _ => false,
        }
    }
}

/// A target entry list with `expr` appended as its next column.
unsafe fn append_entry(list: *mut pg_sys::List, expr: *mut pg_sys::Expr) -> *mut pg_sys::List {
    // SAFETY: palloc'd nodes.
    unsafe {
        let resno = list_len(list) as i16 + 1;
        pg_sys::lappend(list, pg_sys::makeTargetEntry(expr, resno, std::ptr::null_mut(), false) as *mut c_void)
    }
}

/// A Var of `varno` for column `k` (from 0) that holds `expr`'s value.
unsafe fn var_for(varno: i32, k: usize, expr: *mut pg_sys::Node) -> *mut pg_sys::Var {
    // SAFETY: `expr` is an expression node.
    unsafe { pg_sys::makeVar(varno, k as i16 + 1, pg_sys::exprType(expr), pg_sys::exprTypmod(expr), pg_sys::exprCollation(expr), 0) }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Calls evaluated once per row of the node's input (not in aggregates, which read a group).
    OutsideAggregates,
    /// Calls in the arguments of aggregates (without FILTER) that read each input row.
    InAggregates,
    /// Any call (the test before copying a plan).
    Anywhere,
}

struct Finder {
    mode: Mode,
    in_aggregate: bool,
    calls: Vec<*mut pg_sys::Node>,
}

impl Finder {
    fn new(mode: Mode) -> Finder {
        Finder { mode, in_aggregate: false, calls: Vec::new() }
    }

    fn collecting(&self) -> bool {
        match self.mode {
            Mode::InAggregates => self.in_aggregate,
            _ => true,
        }
    }
}

unsafe fn walk(node: *mut pg_sys::Node, finder: &mut Finder) {
    // SAFETY: an expression tree; the walker reads it.
    unsafe {
        find_walker(node, finder as *mut Finder as *mut c_void);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn find_walker(node: *mut pg_sys::Node, context: *mut c_void) -> bool {
    use pg_sys::NodeTag::*;
    // SAFETY: `context` is the Finder of walk(); `node` an expression node.
    unsafe {
        if node.is_null() {
            return false;
        }
        let finder = &mut *(context as *mut Finder);
        match (*node).type_ {
            T_FuncExpr if finder.collecting() && batchable(node as *mut pg_sys::FuncExpr) => {
                if !finder.calls.iter().any(|&c| pg_sys::equal(c as *const c_void, node as *const c_void)) {
                    finder.calls.push(node);
                }
                return false;
            }
            T_Aggref if finder.mode == Mode::InAggregates && !finder.in_aggregate => {
                let aggref = node as *mut pg_sys::Aggref;
                if (*aggref).aggfilter.is_null() && (*aggref).aggsplit & pg_sys::AGGSPLITOP_COMBINE == 0 {
                    finder.in_aggregate = true;
                    pg_sys::expression_tree_walker((*aggref).args as *mut pg_sys::Node, Some(find_walker), context);
                    finder.in_aggregate = false;
                }
                return false;
            }
            T_Aggref | T_WindowFunc | T_GroupingFunc if finder.mode == Mode::OutsideAggregates => return false,
            // Evaluated for some rows only (or per array element, or elsewhere).
            T_CaseExpr | T_CoalesceExpr | T_BoolExpr | T_RowCompareExpr | T_ArrayCoerceExpr | T_SubPlan | T_AlternativeSubPlan
                if finder.collecting() && finder.mode != Mode::Anywhere =>
            {
                return false
            }
            _ => {}
        }
        pg_sys::expression_tree_walker(node, Some(find_walker), context)
    }
}

/// A call pg_bge batches: one of its per-row functions, with arguments that are neither
/// volatile nor subplans.
unsafe fn batchable(call: *mut pg_sys::FuncExpr) -> bool {
    // SAFETY: a FuncExpr node.
    unsafe {
        if u32::from((*call).funcid) < pg_sys::FirstNormalObjectId || (*call).funcretset {
            return false;
        }
        let args = (*call).args as *mut pg_sys::Node;
        if pg_sys::contain_volatile_functions(args) || pg_sys::contain_subplans(args) {
            return false;
        }
        let types: Vec<pg_sys::Oid> = list_ptrs::<pg_sys::Node>((*call).args).iter().map(|&a| pg_sys::exprType(a)).collect();
        Kind::of((*call).funcid, &types).is_some()
    }
}

/// The values a target list reads from its node's input: Vars and aggregates (and window
/// functions), each once.
unsafe fn plain_values(node: *mut pg_sys::Node) -> Vec<*mut pg_sys::Node> {
    #[pg_guard]
    unsafe extern "C-unwind" fn walker(node: *mut pg_sys::Node, context: *mut c_void) -> bool {
        use pg_sys::NodeTag::*;
        // SAFETY: `context` is the Vec below.
        unsafe {
            if node.is_null() {
                return false;
            }
            if matches!((*node).type_, T_Var | T_Aggref | T_WindowFunc | T_GroupingFunc) {
                let items = &mut *(context as *mut Vec<*mut pg_sys::Node>);
                if !items.iter().any(|&i| pg_sys::equal(i as *const c_void, node as *const c_void)) {
                    items.push(node);
                }
                return false;
            }
            pg_sys::expression_tree_walker(node, Some(walker), context)
        }
    }
    let mut items = Vec::new();
    // SAFETY: an expression tree.
    unsafe { walker(node, &mut items as *mut Vec<*mut pg_sys::Node> as *mut c_void) };
    items
}

/// Replaces calls (equal to `calls`) by Vars of `call_varno` numbered from `call_base`, and
/// plain values (equal to `items`) by Vars of `item_varno`; with `in_aggregates_only`, calls
/// only inside aggregates' arguments.
struct Replace {
    calls: Vec<*mut pg_sys::Node>,
    call_varno: i32,
    call_base: usize,
    items: Vec<*mut pg_sys::Node>,
    item_varno: i32,
    in_aggregates_only: bool,
    depth: usize,
}

impl Replace {
    unsafe fn run(&mut self, node: *mut pg_sys::Node) -> *mut pg_sys::Node {
        // SAFETY: an expression tree; the mutator copies what it changes.
        unsafe { replace_mutator(node, self as *mut Replace as *mut c_void) }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn replace_mutator(node: *mut pg_sys::Node, context: *mut c_void) -> *mut pg_sys::Node {
    use pg_sys::NodeTag::*;
    // SAFETY: `context` is the Replace of run(); `node` an expression node.
    unsafe {
        if node.is_null() {
            return node;
        }
        let r = &mut *(context as *mut Replace);
        let tag = (*node).type_;
        if tag == T_FuncExpr && (!r.in_aggregates_only || r.depth > 0) {
            if let Some(j) = r.calls.iter().position(|&c| pg_sys::equal(c as *const c_void, node as *const c_void)) {
                return var_for(r.call_varno, r.call_base + j, node) as *mut pg_sys::Node;
            }
        }
        if matches!(tag, T_Var | T_Aggref | T_WindowFunc | T_GroupingFunc) {
            if let Some(k) = r.items.iter().position(|&i| pg_sys::equal(i as *const c_void, node as *const c_void)) {
                return var_for(r.item_varno, k, node) as *mut pg_sys::Node;
            }
        }
        if tag == T_Aggref && r.in_aggregates_only {
            let aggref = node as *mut pg_sys::Aggref;
            if (*aggref).aggfilter.is_null() {
                r.depth += 1;
                let out = mutate(node, context);
                r.depth -= 1;
                return out;
            }
            return node;
        }
        mutate(node, context)
    }
}

/// expression_tree_mutator over `node`'s children with replace_mutator.
unsafe fn mutate(node: *mut pg_sys::Node, context: *mut c_void) -> *mut pg_sys::Node {
    // SAFETY: PostgreSQL's mutator with a callback of its documented signature (PostgreSQL 15
    // declares it without a prototype).
    unsafe {
        #[cfg(feature = "pg15")]
        {
            let callback: unsafe extern "C-unwind" fn() -> *mut pg_sys::Node =
                std::mem::transmute(replace_mutator as unsafe extern "C-unwind" fn(*mut pg_sys::Node, *mut c_void) -> *mut pg_sys::Node);
            pg_sys::expression_tree_mutator(node, Some(callback), context)
        }
        #[cfg(not(feature = "pg15"))]
        {
            pg_sys::expression_tree_mutator_impl(node, Some(replace_mutator), context)
        }
    }
}
