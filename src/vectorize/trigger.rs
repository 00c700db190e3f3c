//! The trigger bge_vectorize puts on a table: BEFORE INSERT OR UPDATE OF source, FOR EACH ROW,
//! arguments (source, target). An inserted row, or an update that changes the source, gets a
//! NULL target, which queues the row for the vectorizer worker; no stale vector can survive a
//! change of its source, however many writes come before the worker gets to the row.
use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::errors::raise_with;

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
        let mut target_null = false;
        pg_sys::SPI_getbinval(row, desc, target, &mut target_null);
        if target_null || (op == pg_sys::TRIGGER_EVENT_UPDATE && source_unchanged(data.tg_trigtuple, row, desc, source)) {
            return pg_sys::Datum::from(row);
        }
        let mut replace_cols = [target];
        let mut values = [pg_sys::Datum::from(0usize)];
        let mut nulls = [true];
        let modified = pg_sys::heap_modify_tuple_by_cols(row, desc, 1, replace_cols.as_mut_ptr(), values.as_mut_ptr(), nulls.as_mut_ptr());
        pg_sys::Datum::from(modified)
    }
}

/// Whether the update keeps the source's bytes (a changed value always differs; an unchanged
/// one stored differently counts as changed, which only costs a new embedding).
unsafe fn source_unchanged(old: pg_sys::HeapTuple, new: pg_sys::HeapTuple, desc: pg_sys::TupleDesc, source: i32) -> bool {
    // SAFETY: both tuples belong to `desc`'s relation; source is a valid column number.
    unsafe {
        let (mut old_null, mut new_null) = (false, false);
        let old_value = pg_sys::SPI_getbinval(old, desc, source, &mut old_null);
        let new_value = pg_sys::SPI_getbinval(new, desc, source, &mut new_null);
        if old_null || new_null {
            return old_null && new_null;
        }
        let (mut len, mut by_value) = (0i16, false);
        pg_sys::get_typlenbyval(pg_sys::SPI_gettypeid(desc, source), &mut len, &mut by_value);
        let bytes = |value: pg_sys::Datum| -> &[u8] {
            let ptr = value.cast_mut_ptr::<u8>() as *const u8;
            let n = match len {
                -1 => pgrx::varlena::varsize_any(ptr.cast()),
                -2 => CStr::from_ptr(ptr.cast()).to_bytes().len(),
                n => n as usize,
            };
            std::slice::from_raw_parts(ptr, n)
        };
        if by_value {
            old_value == new_value
        } else {
            bytes(old_value) == bytes(new_value)
        }
    }
}

#[no_mangle]
pub extern "C" fn pg_finfo_bge_vectorize_trigger() -> &'static pg_sys::Pg_finfo_record {
    const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}
