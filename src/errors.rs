//! engine::Error -> ereport(ERROR) with SQLSTATE, message and hint; and what an ordinary role
//! may see of it: the model directory is a server path, so a role that is not superuser sees
//! it named by its setting, `bge.model_dir`.
use std::io::Write;
use std::path::Path;

use bge_engine::error::ErrorKind;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

pub fn sqlstate(kind: ErrorKind) -> PgSqlErrorCode {
    match kind {
        ErrorKind::UndefinedModel => PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
        ErrorKind::InvalidParameter => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        ErrorKind::ModelFileMissing => PgSqlErrorCode::ERRCODE_UNDEFINED_FILE,
        ErrorKind::ModelFileCorrupt => PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
        ErrorKind::FeatureNotSupported => PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
        ErrorKind::InputTooLong => PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        // bge.device = cuda without a usable GPU: the SQLSTATE a build without CUDA gave.
        ErrorKind::DeviceUnavailable => PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
        ErrorKind::OutOfMemory => PgSqlErrorCode::ERRCODE_OUT_OF_MEMORY,
        ErrorKind::Internal => PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
    }
}

/// Raises `err` as a PostgreSQL ERROR; never returns.
pub fn raise(err: bge_engine::Error) -> ! {
    let mut report = ErrorReport::new(sqlstate(err.kind()), for_caller(err.to_string()), "pg_bge");
    if let Some(hint) = err.hint() {
        report = report.set_hint(for_caller(hint));
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("ereport(ERROR) returned")
}

/// Raises an ERROR with an explicit SQLSTATE, message and hint (those of the model server's
/// errors included, which name the same directory).
pub fn raise_with(code: PgSqlErrorCode, message: String, hint: &str) -> ! {
    ErrorReport::new(code, for_caller(message), "pg_bge").set_hint(for_caller(hint.to_string())).report(PgLogLevel::ERROR);
    unreachable!("ereport(ERROR) returned")
}

/// `text` as the current role may see it: unchanged for a superuser (who can read and set
/// bge.model_dir anyway), else with the model directory replaced by `bge.model_dir`.
pub fn for_caller(text: String) -> String {
    // SAFETY: plain reads; superuser() reads the catalog, so only inside a transaction
    // (outside one the text is scrubbed).
    if unsafe { pgrx::pg_sys::IsTransactionState() && pgrx::pg_sys::superuser() } {
        return text;
    }
    without_model_dir(&text)
}

/// `text` with the current bge.model_dir replaced by `bge.model_dir`, for text that roles
/// other than superusers may read (errors stored for later, as well as raised ones).
pub fn without_model_dir(text: &str) -> String {
    scrub_dir(text, &crate::gucs::model_dir())
}

/// `text` with `dir` (as written, and as the filesystem resolves it) replaced by
/// `bge.model_dir`.
fn scrub_dir(text: &str, dir: &Path) -> String {
    let mut out = text.to_string();
    let resolved = std::fs::canonicalize(dir).ok();
    for d in std::iter::once(dir).chain(resolved.as_deref()) {
        let d = d.to_string_lossy();
        let d = d.trim_end_matches('/');
        // "/" alone (or nothing) names no directory worth hiding and would mangle every path.
        if !d.is_empty() && out.contains(d) {
            out = out.replace(d, "bge.model_dir");
        }
    }
    out
}

pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for bge_engine::Result<T> {
    fn or_raise(self) -> T {
        self.unwrap_or_else(|e| raise(e))
    }
}

/// An SPI call that failed without an ERROR of its own (the ERRORs of the SQL it runs propagate
/// as they are, with their SQLSTATEs).
impl<T> OrRaise<T> for Result<T, pgrx::spi::SpiError> {
    fn or_raise(self) -> T {
        self.unwrap_or_else(|e| raise_with(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("pg_bge: SPI failed: {e}"), "This is a bug in pg_bge; please report it."))
    }
}

/// Replaces pgrx's panic hook (call from _PG_init: pgrx installs its own as the library loads,
/// before _PG_init). pgrx's hook captures a Rust backtrace at every panic, and pgrx sends a
/// captured one to the client as the ERROR's DETAIL: with RUST_BACKTRACE set in the server's
/// environment an ordinary role would read the server's stack, source paths and all, after a
/// panic, a cancel or any PostgreSQL error that passed through Rust frames. This hook records
/// nothing for pgrx, so a panic is an ERROR with its message alone (SQLSTATE XX000, no DETAIL),
/// whatever RUST_BACKTRACE says; a panic's location goes to the server log only.
pub fn install_panic_hook() {
    drop(std::panic::take_hook());
    std::panic::set_hook(Box::new(|info| {
        // ERRORs raised from Rust and PostgreSQL errors passing through Rust frames unwind as
        // panics too, with other payloads: only a panic with a message (a bug) is logged.
        let payload = info.payload();
        let message = payload.downcast_ref::<&str>().copied().or_else(|| payload.downcast_ref::<String>().map(String::as_str));
        if let Some(message) = message {
            let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
            // Not eprintln!, which panics (an abort, here) where stderr cannot be written.
            let _ = writeln!(std::io::stderr(), "pg_bge: Rust panic at {location}: {message}");
        }
    }));
}
