//! Acting for a table's owner, the way PostgreSQL's own maintenance does (autovacuum, CREATE
//! INDEX, REFRESH MATERIALIZED VIEW): the owner's code (triggers, defaults, constraints, index
//! expressions, policies) runs as the owner inside a security-restricted operation, in its own
//! GUC nest level with search_path = pg_catalog, pg_temp, and every setting it changes is rolled
//! back before pg_bge's code runs again. pg_bge's own SQL beside it runs in such a nest level
//! too, and qualifies its operators, so no name resolves through a path a user controls.
use std::ffi::CStr;
use std::time::{Duration, Instant};

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::errors::{raise_with, OrRaise};

/// A GUC nest level with search_path = pg_catalog, pg_temp; on drop every setting changed
/// inside (SET and SET LOCAL alike) goes back to what it was. An ERROR inside pops the level
/// with the (sub)transaction's abort instead.
pub struct SettingsScope(i32);

impl SettingsScope {
    pub fn enter() -> SettingsScope {
        // SAFETY: a GUC call on the main thread inside a transaction.
        let scope = SettingsScope(unsafe { pg_sys::NewGUCNestLevel() });
        // RestrictSearchPath on PostgreSQL 17+ does the same.
        scope.set(c"search_path", c"pg_catalog, pg_temp");
        scope
    }

    /// `name = value` until the scope ends.
    pub fn set(&self, name: &CStr, value: &CStr) {
        set_config(name, value, pg_sys::GucAction::GUC_ACTION_SAVE);
    }
}

impl Drop for SettingsScope {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // SAFETY: pops exactly the level enter() pushed, discarding what was set inside.
            unsafe { pg_sys::AtEOXact_GUC(false, self.0) };
        }
    }
}

/// search_path = pg_catalog, pg_temp for this whole session (the vectorizer worker's own).
pub fn restrict_session_search_path() {
    set_config(c"search_path", c"pg_catalog, pg_temp", pg_sys::GucAction::GUC_ACTION_SET);
}

/// A setting as SET would change it (GUC_ACTION_SET), or for the current nest level only
/// (GUC_ACTION_SAVE).
fn set_config(name: &CStr, value: &CStr, action: pg_sys::GucAction::Type) {
    // SAFETY: main thread, inside a transaction; set_config_option checks the value.
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            action,
            true,
            0,
            false,
        );
    }
}

/// The first column of the first row of a read-only query (None for no row or NULL). Read-only
/// SPI, unlike pgrx's Spi::get_one (which assigns a transaction id): works on a standby.
pub fn select_one<T: FromDatum + IntoDatum>(query: &str, args: &[pgrx::datum::DatumWithOid]) -> pgrx::spi::Result<Option<T>> {
    Spi::connect(|client| client.select(query, Some(1), args)?.first().get_one())
}

/// Runs `f` as `role` in a security-restricted operation with its own settings scope. An ERROR
/// inside unwinds to the enclosing (sub)transaction, whose abort restores the user, the
/// security context and the settings.
pub fn run_as<T>(role: pg_sys::Oid, f: impl FnOnce() -> T) -> T {
    // SAFETY: main thread inside a transaction; restored in the reverse order of CREATE INDEX.
    unsafe {
        let (mut user, mut context) = (pg_sys::InvalidOid, 0);
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        let restricted = (pg_sys::SECURITY_LOCAL_USERID_CHANGE | pg_sys::SECURITY_RESTRICTED_OPERATION) as i32;
        pg_sys::SetUserIdAndSecContext(role, context | restricted);
        let scope = SettingsScope::enter();
        let result = f();
        drop(scope);
        pg_sys::SetUserIdAndSecContext(user, context);
        result
    }
}

/// A relation as pg_class has it now.
pub struct Relation {
    pub oid: pg_sys::Oid,
    /// relkind: "r" a plain table, "p" partitioned, "v" a view, ...
    pub kind: String,
    pub owner: pg_sys::Oid,
    /// Schema-qualified, quoted: usable in SQL.
    pub name: String,
    /// Row-level security is enabled on it.
    pub row_security: bool,
}

/// Relation `oid`, or None when it does not exist.
pub fn relation(oid: pg_sys::Oid) -> Option<Relation> {
    let _scope = SettingsScope::enter();
    Spi::connect(|client| {
        let rows = client
            .select(
                "SELECT c.relkind::pg_catalog.text, c.relowner, c.oid::pg_catalog.regclass::pg_catalog.text, c.relrowsecurity \
                 FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) $1",
                None,
                &[oid.into()],
            )
            .ok()?;
        let row = rows.first();
        Some(Relation {
            oid,
            kind: row.get::<String>(1).ok()??,
            owner: row.get::<pg_sys::Oid>(2).ok()??,
            name: row.get::<String>(3).ok()??,
            row_security: row.get::<bool>(4).ok()??,
        })
    })
}

/// Relation `oid`, which the current user must own (be a member of its owner role, as
/// PostgreSQL's ALTER TABLE asks): else ERROR 42501 (42P01 when it does not exist).
pub fn any_owned_relation(oid: pg_sys::Oid) -> Relation {
    let Some(r) = relation(oid) else {
        raise_with(PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE, format!("relation with OID {} does not exist", u32::from(oid)), "It was dropped meanwhile.");
    };
    if !acts_as(r.owner) {
        raise_with(PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE, format!("must be owner of table {}", r.name), "Only the table's owner (or a member of its role) may do this.");
    }
    r
}

/// The table `oid` (plain or partitioned), which the current user must own: else ERROR 42501,
/// or 42809 for what is not a table.
pub fn owned_table(oid: pg_sys::Oid) -> Relation {
    let r = any_owned_relation(oid);
    match r.kind.as_str() {
        "r" | "p" => r,
        _ => raise_with(PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE, format!("{} is not a table", r.name), "pg_bge fills tables and partitioned tables."),
    }
}

/// The plain tables holding the rows of table `oid`: itself, or every partition of a partitioned
/// table at any depth (those attached since included), in a stable order.
pub fn leaves(oid: pg_sys::Oid) -> Vec<pg_sys::Oid> {
    let _scope = SettingsScope::enter();
    Spi::connect(|client| {
        client
            .select(
                "SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relkind OPERATOR(pg_catalog.=) 'r' \
                 AND (c.oid OPERATOR(pg_catalog.=) $1 OR c.oid OPERATOR(pg_catalog.=) ANY \
                      (SELECT t.relid FROM pg_catalog.pg_partition_tree($1::pg_catalog.regclass) t)) ORDER BY c.oid",
                None,
                &[oid.into()],
            )
            .or_raise()
            .filter_map(|row| row.get::<pg_sys::Oid>(1).ok().flatten())
            .collect()
    })
}

/// Whether the current user has the privileges of `role` (is it, or a member of it).
pub fn acts_as(role: pg_sys::Oid) -> bool {
    // SAFETY: a plain catalog lookup on the main thread.
    unsafe { pg_sys::has_privs_of_role(pg_sys::GetUserId(), role) }
}

/// Whether the current user may read table `oid` (SELECT on the table).
pub fn can_read(oid: pg_sys::Oid) -> bool {
    // SAFETY: a plain ACL lookup on the main thread.
    unsafe { pg_sys::pg_class_aclcheck(oid, pg_sys::GetUserId(), pg_sys::ACL_SELECT as pg_sys::AclMode) == pg_sys::AclResult::ACLCHECK_OK }
}

/// The role that installed pg_bge (owner of its tables): registrations are written as it.
pub fn extension_owner() -> pg_sys::Oid {
    let _scope = SettingsScope::enter();
    select_one::<pg_sys::Oid>("SELECT e.extowner FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'pg_bge'", &[])
        .ok()
        .flatten()
        .unwrap_or_else(|| raise_with(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, "pg_bge is not installed in this database".into(), "CREATE EXTENSION pg_bge;"))
}

/// The schema pg_bge is installed in, quoted for SQL (read in the caller's transaction: the
/// extension may be moved); an ERROR when it is not installed.
pub fn installed_schema() -> String {
    extension_schema().unwrap_or_else(|| raise_with(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, "pg_bge is not installed in this database".into(), "CREATE EXTENSION pg_bge;"))
}

/// The schema pg_bge is installed in, quoted for SQL; None when it is not installed.
pub fn extension_schema() -> Option<String> {
    let _scope = SettingsScope::enter();
    select_one::<String>(
        "SELECT n.nspname::pg_catalog.text FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n \
         ON n.oid OPERATOR(pg_catalog.=) e.extnamespace WHERE e.extname OPERATOR(pg_catalog.=) 'pg_bge'",
        &[],
    )
    .ok()
    .flatten()
    .map(pgrx::spi::quote_identifier)
}

/// Bounds the time a table's own code may run in a batch of the vectorizer: the statement
/// timeout is armed only while that code can run (the batch's queries), never while pg_bge
/// tokenises or computes, and fires again every second past the limit, so code that catches
/// the cancel is cancelled again. Code that keeps catching it is stopped ESCALATE_MS later by
/// terminating the worker (a FATAL nothing can catch); the worker's quarantine marker (see
/// worker.rs) then keeps that table from stalling the others after the restart.
pub struct UserCodeTimer {
    left: Option<Duration>,
    armed_at: Option<Instant>,
    expired: bool,
}

const REPEAT_MS: i32 = 1000;
const ESCALATE_MS: i64 = 3000;

// utils/timeout.h, which pgrx does not bind. STATEMENT_TIMEOUT is the fourth TimeoutId on
// every supported major (its handler cancels the running query); USER_TIMEOUT, the first free
// one, moved with PostgreSQL 17's TRANSACTION_TIMEOUT.
const STATEMENT_TIMEOUT: i32 = 3;
#[cfg(feature = "pg18")]
const USER_TIMEOUT: i32 = 13;
#[cfg(not(feature = "pg18"))]
const USER_TIMEOUT: i32 = 12;
extern "C-unwind" {
    fn RegisterTimeout(id: i32, handler: unsafe extern "C" fn()) -> i32;
    fn enable_timeout_at(id: i32, fin_time: pg_sys::TimestampTz);
    fn enable_timeout_every(id: i32, fin_time: pg_sys::TimestampTz, delay_ms: i32);
    fn disable_timeout(id: i32, keep_indicator: bool);
}
extern "C" {
    fn kill(pid: i32, signal: i32) -> i32;
    fn getpid() -> i32;
}
const SIGINT: i32 = 2;

/// The escalation timeout's id in this process (registered on first use; -1 before).
static mut TERMINATE_TIMEOUT: i32 = -1;

/// Runs in the SIGALRM handler: only flag writes and kill(2), which are async-signal-safe. The
/// die flag makes the next CHECK_FOR_INTERRUPTS exit with FATAL; SIGINT wakes a sleeping latch.
unsafe extern "C" fn terminate_worker() {
    // SAFETY: sig_atomic_t flags PostgreSQL's own signal handlers write the same way.
    unsafe {
        std::ptr::write_volatile(&raw mut pg_sys::ProcDiePending, 1);
        std::ptr::write_volatile(&raw mut pg_sys::InterruptPending, 1);
        kill(getpid(), SIGINT);
    }
}

impl UserCodeTimer {
    /// `limit` None: no bound (bge_backfill runs under its caller's statement_timeout).
    pub fn new(limit: Option<Duration>) -> UserCodeTimer {
        UserCodeTimer { left: limit, armed_at: None, expired: false }
    }

    /// Arms the timeout for the time left.
    pub fn resume(&mut self) {
        let Some(left) = self.left else { return };
        if self.armed_at.is_some() {
            return;
        }
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i64;
        // Taken first, so the time counted is never shorter than the timer's.
        self.armed_at = Some(Instant::now());
        // SAFETY: timeout calls on the main thread; STATEMENT_TIMEOUT is registered for every
        // process connected to a database.
        unsafe {
            if TERMINATE_TIMEOUT < 0 {
                TERMINATE_TIMEOUT = RegisterTimeout(USER_TIMEOUT, terminate_worker);
            }
            let fire_at = pg_sys::GetCurrentTimestamp() + ms * 1000;
            enable_timeout_every(STATEMENT_TIMEOUT, fire_at, REPEAT_MS);
            enable_timeout_at(TERMINATE_TIMEOUT, fire_at + ESCALATE_MS * 1000);
        }
    }

    /// Disarms it and counts the time spent.
    pub fn pause(&mut self) {
        let Some(at) = self.armed_at.take() else { return };
        // SAFETY: as in resume.
        unsafe {
            disable_timeout(STATEMENT_TIMEOUT, false);
            disable_timeout(TERMINATE_TIMEOUT, false);
        }
        let left = self.left.unwrap_or_default().saturating_sub(at.elapsed());
        // The timer fires at most a few milliseconds early by this clock.
        self.expired |= left < Duration::from_millis(20);
        self.left = Some(left);
    }

    /// Whether the limit was reached (read after the batch).
    pub fn expired(&mut self) -> bool {
        self.pause();
        self.expired
    }
}

impl Drop for UserCodeTimer {
    fn drop(&mut self) {
        self.pause();
    }
}
