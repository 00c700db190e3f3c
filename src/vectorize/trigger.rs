//! The trigger bge_vectorize puts on a table: BEFORE INSERT OR UPDATE OF source, FOR EACH ROW,
//! arguments (source, target). An inserted row, or an update that changes the source, gets a
//! NULL target, which queues the row for the vectorizer worker; no stale vector can survive a
//! change of its source, however many writes come before the worker gets to the row.
//!
//! An UPDATE that moves a row to another partition is a DELETE and an INSERT to PostgreSQL,
//! whose BEFORE INSERT trigger fires on the destination: a row the UPDATE passed with its
//! source unchanged keeps its vector there (see [`MovedRow`]).
use std::cell::RefCell;
use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::errors::raise_with;

/// A row an UPDATE of a partition just passed with its source unchanged and its target set. If
/// PostgreSQL moves it to another partition, the INSERT into that partition follows within the
/// same command: an inserted row with these very source and target bytes there keeps its target.
struct MovedRow {
    command: (pg_sys::TimestampTz, pg_sys::CommandId),
    source: Vec<u8>,
    target: Vec<u8>,
}

thread_local! {
    static MOVED: RefCell<Option<MovedRow>> = const { RefCell::new(None) };
}

/// The statement and command a trigger fires in.
fn this_command() -> (pg_sys::TimestampTz, pg_sys::CommandId) {
    // SAFETY: plain reads of this backend's transaction state.
    unsafe { (pg_sys::GetCurrentStatementStartTimestamp(), pg_sys::GetCurrentCommandId(false)) }
}

#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn bge_vectorize_trigger(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: PostgreSQL calls this with a valid fcinfo; as a trigger its context is TriggerData,
    // whose relation, tuples and arguments live for the call.
    unsafe {
        let context = (*fcinfo).context;
        if context.is_null() || (*context).type_ != pg_sys::NodeTag::T_TriggerData {
            raise_with(PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED, "bge_vectorize_trigger must be called as a trigger".into(), "bge_vectorize creates it.");
        }
        let data = &*(context as *const pg_sys::TriggerData);
        let event = data.tg_event;
        let row_before = event & pg_sys::TRIGGER_EVENT_ROW != 0 && event & pg_sys::TRIGGER_EVENT_TIMINGMASK == pg_sys::TRIGGER_EVENT_BEFORE;
        let op = event & pg_sys::TRIGGER_EVENT_OPMASK;
        let trigger = &*data.tg_trigger;
        if !row_before || !(op == pg_sys::TRIGGER_EVENT_INSERT || op == pg_sys::TRIGGER_EVENT_UPDATE) || trigger.tgnargs != 2 {
            raise_with(
                PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
                "bge_vectorize_trigger must be a BEFORE INSERT OR UPDATE row trigger with arguments (source, target)".into(),
                "bge_vectorize creates it.",
            );
        }
        super::worker::ensure_started_once();
        let args = std::slice::from_raw_parts(trigger.tgargs, 2);
        let desc = (*data.tg_relation).rd_att;
        let column = |arg: *mut std::ffi::c_char| {
            let n = pg_sys::SPI_fnumber(desc, arg);
            if n <= 0 {
                let name = CStr::from_ptr(arg).to_string_lossy().into_owned();
                raise_with(PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN, format!("column \"{name}\" of the vectorized table does not exist"), "Call bge_unvectorize and bge_vectorize again.");
            }
            n
        };
        let (source, target) = (column(args[0]), column(args[1]));
        let row = if op == pg_sys::TRIGGER_EVENT_INSERT { data.tg_trigtuple } else { data.tg_newtuple };
        let Some(target_bytes) = value_bytes(row, desc, target) else {
            return pg_sys::Datum::from(row);
        };
        let partition = (*(*data.tg_relation).rd_rel).relispartition;
        if op == pg_sys::TRIGGER_EVENT_UPDATE && value_bytes(data.tg_trigtuple, desc, source) == value_bytes(row, desc, source) {
            if partition {
                let source_bytes = value_bytes(row, desc, source).unwrap_or_default().into_owned();
                MOVED.with(|m| *m.borrow_mut() = Some(MovedRow { command: this_command(), source: source_bytes, target: target_bytes.into_owned() }));
            }
            return pg_sys::Datum::from(row);
        }
        if op == pg_sys::TRIGGER_EVENT_INSERT && partition {
            let moved = MOVED.with(|m| m.borrow_mut().take());
            if moved.is_some_and(|m| m.command == this_command() && *m.target == *target_bytes && Some(&m.source[..]) == value_bytes(row, desc, source).as_deref()) {
                return pg_sys::Datum::from(row);
            }
        }
        let mut replace_cols = [target];
        let mut values = [pg_sys::Datum::from(0usize)];
        let mut nulls = [true];
        let modified = pg_sys::heap_modify_tuple_by_cols(row, desc, 1, replace_cols.as_mut_ptr(), values.as_mut_ptr(), nulls.as_mut_ptr());
        pg_sys::Datum::from(modified)
    }
}

/// Column `column`'s value in `row` as stored (None for NULL). An update keeps the source when
/// its bytes are equal (a changed value always differs; an unchanged one stored differently
/// counts as changed, which only costs a new embedding).
/// By-value types are widened to a Datum's bytes.
unsafe fn value_bytes<'a>(row: pg_sys::HeapTuple, desc: pg_sys::TupleDesc, column: i32) -> Option<std::borrow::Cow<'a, [u8]>> {
    // SAFETY: the tuple belongs to `desc`'s relation; column is a valid column number.
    unsafe {
        let mut null = false;
        let value = pg_sys::SPI_getbinval(row, desc, column, &mut null);
        if null {
            return None;
        }
        let (mut len, mut by_value) = (0i16, false);
        pg_sys::get_typlenbyval(pg_sys::SPI_gettypeid(desc, column), &mut len, &mut by_value);
        if by_value {
            return Some(value.value().to_ne_bytes().to_vec().into());
        }
        let ptr = value.cast_mut_ptr::<u8>() as *const u8;
        let n = match len {
            -1 => pgrx::varlena::varsize_any(ptr.cast()),
            -2 => CStr::from_ptr(ptr.cast()).to_bytes().len() + 1,
            n => n as usize,
        };
        Some(std::slice::from_raw_parts(ptr, n).into())
    }
}

#[no_mangle]
pub extern "C" fn pg_finfo_bge_vectorize_trigger() -> &'static pg_sys::Pg_finfo_record {
    const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}
