//! engine::Error -> ereport(ERROR) with SQLSTATE, message and hint.
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
    let mut report = ErrorReport::new(sqlstate(err.kind()), err.to_string(), "pg_bge");
    if let Some(hint) = err.hint() {
        report = report.set_hint(hint);
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("ereport(ERROR) returned")
}

/// Raises an ERROR with an explicit SQLSTATE, message and hint.
pub fn raise_with(code: PgSqlErrorCode, message: String, hint: &str) -> ! {
    ErrorReport::new(code, message, "pg_bge").set_hint(hint).report(PgLogLevel::ERROR);
    unreachable!("ereport(ERROR) returned")
}

pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for bge_engine::Result<T> {
    fn or_raise(self) -> T {
        self.unwrap_or_else(|e| raise(e))
    }
}
