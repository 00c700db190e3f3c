#!/usr/bin/env bash
# pg_bge against hostile ordinary roles (docs/security.md): the vectorizer worker, bge_backfill,
# bge_vectorize_status, bge_unvectorize and the registration tables, on a fresh cluster with
# shared_preload_libraries = 'pg_bge'. alice is the attacker, bob the bystander, dbo a database
# owner, carol a monitoring role (pg_read_all_data); postgres plays the administrator.
#
#   1. Settings a table's trigger changes while the worker writes its batch (search_path, locally
#      and for the whole session, toward operators and now() in alice's schema; bge.device,
#      bge.precision, bge.truncate, statement_timeout, lock_timeout; default_transaction_read_only;
#      SET ROLE / SESSION AUTHORIZATION / session_replication_role) never reach pg_bge's own
#      queries or another table's batch: nothing planted runs as a superuser or as bob, and every
#      table (alice's and bob's) ends up equal to bge_embed(body, model), twice.
#   2. A database owner's operators in public (=(oid, regclass)) and in a schema named after the
#      worker's user ("$user" = postgres, =(regclass, oid)) are never called by the worker.
#   3. Registrations: direct INSERT/UPDATE/DELETE on bge_vectorized and bge_vectorize_errors by an
#      ordinary role fail with 42501; bge_vectorize on a view, materialized view, sequence,
#      partitioned table, composite type or index fails with 42809, on another role's table with
#      42501 (bge_backfill on a view: 42809). alice's table whose trigger always fails keeps its
#      rows pending and shows last_error in its status row; bge_vectorize_status() called by
#      carol and by postgres never runs alice's code as them while counting those rows (her
#      table's forced row-level security policy logs who runs it). On PostgreSQL 15 alice turns a vectorized table into a view in place
#      (CREATE RULE "_RETURN", same OID): status still answers and the worker still serves bob.
#   4. CALL bge_backfill by a superuser, with default search_path, on alice's table while alice may
#      create in public (the extension's schema) and has planted better-matching cardinality,
#      array_to_string, ||, /, =, format, round and bge_backfill_batch there, plus an assignment cast
#      into her target type: the rows are right, nothing planted runs as postgres, her trigger
#      runs as alice, and the caller's search_path is unchanged after. bob (granted SELECT and
#      UPDATE by alice) may not backfill her table (42501). Better-matching overloads of pg_bge's
#      internal helpers (bge_backfill_batch, bge_backfill_begin, bge_vectorize_register,
#      _unregister, _pending) run for nobody but alice through bge_vectorize, bge_vectorize_status
#      (as postgres and bob) and bge_unvectorize (as postgres).
#   5. alice cannot make the administrator's bge_unvectorize drop bob's index: direct UPDATE of
#      pending_index fails (42501); her table named like bob's, and her pending index renamed to
#      bob's index name, lose only their own index.
#   6. A trigger that sleeps 30 s (and, in another database, one that catches query_canceled and
#      sleeps on) delays bob's fresh row by less than 15 s; alice's status row shows last_error.
#   7. Counters: direct UPDATE of rows_done / tokens_done to the bigint maximum by alice fails
#      (42501); the worker still serves bob (and alice) within 15 s.
# After every section: no planted function ran as a superuser or as anyone but its planter (a
# log table and RAISE LOG lines in the server log, which survive rollbacks), alice, bob, dbo and
# carol are not superusers, and bob's indexes and triggers are untouched.
#
#   tests/security/attacks.sh MODEL_DIR     (MODEL_DIR as scripts/models/make_test_models.py makes it)
#
# Exits 1 on the first violation; ATTACKS_KEEP_GOING=1 reports every violation and exits 1 at
# the end.
set -eEuo pipefail
trap 'echo "attacks.sh: line $LINENO: failed: $BASH_COMMAND" >&2' ERR
cd "$(dirname "$0")/../.."
MODELS=${1:?usage: tests/security/attacks.sh MODEL_DIR}
export PG_BGE_PG=${PG_BGE_PG:-15}
. scripts/postgres/versions.sh
BIN=$(dirname "$(pg_config_of "$PG_BGE_PG")")
M=all-MiniLM-L6-v2
START=$SECONDS
FAILURES=0
WORK=$(mktemp -d /tmp/pg_bge_attacks.XXXXXX)
DBS=()
BOB_OBJECTS=()

scripts/postgres/cluster.sh start "bge.model_dir = '$MODELS'" "shared_preload_libraries = 'pg_bge'" "max_worker_processes = 32"
PORT=$(scripts/postgres/cluster.sh port)
PSQL=("$BIN/psql" -h /tmp -p "$PORT" -X -qAt -v ON_ERROR_STOP=1 -v model="$M")

# as ROLE DB [psql args]: SQL from -c arguments, or from stdin without them.
as() {
    local role=$1 db=$2
    shift 2
    "${PSQL[@]}" -U "$role" -d "$db" "$@"
}
# qs DB -c SQL...: the superuser's own checks, with a search_path nobody else can write to.
qs() {
    local db=$1
    shift
    as postgres "$db" -c "SET search_path = pg_catalog, pg_temp" "$@"
}
# try_as ROLE DB: SQL from stdin; prints "ok", or "SQLSTATE message" of the first error.
try_as() {
    local out
    if out=$("${PSQL[@]}" -U "$1" -d "$2" -c '\set VERBOSITY verbose' -f - 2>&1); then
        echo ok
    else
        out=$(sed -nE 's/^(psql:[^ ]*: )?ERROR:  ([0-9A-Z]{5}): (.*)$/\2 \3/p' <<<"$out" | awk 'NR == 1')
        echo "${out:-?? error without SQLSTATE}"
    fi
}
fail() {
    echo "FAIL: $*" >&2
    if [ "${ATTACKS_KEEP_GOING:-0}" = 1 ]; then
        FAILURES=$((FAILURES + 1))
        return 0
    fi
    exit 1
}
# refused SQLSTATE ROLE DB WHAT: SQL from stdin must fail with that SQLSTATE.
refused() {
    local want=$1 role=$2 db=$3 what=$4 got
    got=$(try_as "$role" "$db")
    if [ "${got%% *}" = "$want" ]; then
        echo "ok: $what: refused ($got)"
    else
        fail "$what: expected SQLSTATE $want, got: $got"
    fi
}
# plant ROLE DB WHAT: SQL from stdin; a hostile object that may not be creatable on a fixed
# build (a signature pg_bge now uses itself) is reported, not fatal.
plant() {
    local got
    got=$(try_as "$1" "$2")
    [ "$got" = ok ] || echo "note: $1 could not plant $3 in $2: $got"
}
release_sleepers() {
    local db
    for db in "${DBS[@]}"; do
        qs "$db" -c "UPDATE public.atk_ctl SET go = false" >/dev/null 2>&1 || true
    done
}
on_exit() {
    local rc=$?
    release_sleepers
    if [ $rc -ne 0 ] || [ $FAILURES -ne 0 ]; then
        echo "-- server log, pg_bge lines (last 40):" >&2
        qs postgres -c "SELECT pg_catalog.pg_read_file('server.log')" 2>/dev/null | grep -E "pg_bge|PANIC" | grep -v "pg_bge_attack" | tail -40 >&2 || true
    fi
    scripts/postgres/cluster.sh stop
    rm -rf "$WORK"
}
trap on_exit EXIT

# mkdb NAME [OWNER]: a database with pg_bge (installed by the superuser), alice's and bob's
# schemas, a log every role may append to, and the logging function every planted object calls.
mkdb() {
    local db=$1 owner=${2:-postgres}
    qs postgres -c "CREATE DATABASE $db OWNER $owner"
    DBS+=("$db")
    as postgres "$db" >/dev/null <<'SQL'
CREATE EXTENSION pg_bge;
CREATE SCHEMA alice_s AUTHORIZATION alice;
CREATE SCHEMA bob_s AUTHORIZATION bob;
GRANT USAGE ON SCHEMA alice_s, bob_s TO PUBLIC;
CREATE TABLE public.pwned (n bigserial, who name NOT NULL, planter name NOT NULL, what text NOT NULL,
                           at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp());
GRANT USAGE ON SEQUENCE public.pwned_n_seq TO PUBLIC;
GRANT SELECT, INSERT ON public.pwned TO PUBLIC;
-- Sleeping triggers (section 6) run while go is true.
CREATE TABLE public.atk_ctl (go boolean NOT NULL);
INSERT INTO public.atk_ctl VALUES (true);
GRANT SELECT ON public.atk_ctl TO PUBLIC;
-- Called by every planted function: records who runs it (also in the server log, which a
-- rollback does not undo) and tries to make the planter a superuser.
CREATE FUNCTION public.atk_log(planter name, what text) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE LOG 'pg_bge_attack who=% planter=% what=%', current_user, planter, what;
    BEGIN
        INSERT INTO public.pwned (who, planter, what) VALUES (current_user, planter, what);
    EXCEPTION WHEN OTHERS THEN
        NULL;
    END;
    BEGIN
        EXECUTE format('ALTER ROLE %I SUPERUSER', planter);
    EXCEPTION WHEN OTHERS THEN
        NULL;
    END;
    RETURN true;
END $$;
SQL
}

# make_bob DB: bob's vectorized table bob_s.bob_t; its indexes and triggers are remembered.
make_bob() {
    local db=$1
    as bob "$db" >/dev/null <<'SQL'
CREATE TABLE bob_s.bob_t (id int PRIMARY KEY, body text, emb real[]);
INSERT INTO bob_s.bob_t SELECT g, 'bob writes row ' || g FROM generate_series(1, 3) g;
SELECT bge_vectorize('bob_s.bob_t', 'body', 'emb', :'model');
SQL
    BOB_OBJECTS+=("$db|$(qs "$db" -c "SELECT string_agg(indexrelid::text, ',' ORDER BY indexrelid) FROM pg_index WHERE indrelid = 'bob_s.bob_t'::regclass")|$(qs "$db" -c "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'bob_s.bob_t'::regclass AND NOT tgisinternal")")
}

# wrong DB TABLE [EXPR]: rows whose EXPR (default emb) differs from bge_embed(body, model).
wrong() {
    qs "$1" -c "SELECT count(*) FROM $2 WHERE body IS NOT NULL AND ${3:-emb} IS DISTINCT FROM public.bge_embed(body, '$M')"
}
# wait_filled DB TABLE SECONDS [EXPR]: waits until no row of TABLE is pending, then checks that
# every row equals bge_embed(body, model). Returns 1 (with a message) otherwise.
wait_filled() {
    local db=$1 tbl=$2 end=$((SECONDS + $3)) expr=${4:-emb} n
    until [ "$(qs "$db" -c "SELECT count(*) FROM $tbl WHERE body IS NOT NULL AND $expr IS NULL")" = 0 ]; do
        if [ $SECONDS -ge "$end" ]; then
            echo "$db: $tbl: $(qs "$db" -c "SELECT count(*) FROM $tbl WHERE body IS NOT NULL AND $expr IS NULL") rows still pending after $3 s" >&2
            return 1
        fi
        sleep 0.2
    done
    n=$(wrong "$db" "$tbl" "$expr")
    [ "$n" = 0 ] || { echo "$db: $tbl: $n rows differ from bge_embed(body, '$M')" >&2; return 1; }
}

# check_clean LABEL: since the last check, nothing planted ran as a superuser or as anyone but its
# planter; nobody is a superuser; bob's indexes and triggers are all there.
declare -A PWNED_SEEN
LOG_SEEN=0
check_clean() {
    local label=$1 db bad entry idx ntrig upto size escalated=() before=$FAILURES
    for db in "${DBS[@]}"; do
        upto=$(qs "$db" -c "SELECT coalesce(max(n), 0) FROM public.pwned")
        bad=$(qs "$db" -c "SELECT string_agg(DISTINCT format('%s ran \"%s\" (planted by %s)', p.who, p.what, p.planter), '; ')
                           FROM public.pwned p LEFT JOIN pg_roles r ON r.rolname = p.who
                           WHERE p.n > ${PWNED_SEEN[$db]:-0} AND p.n <= $upto AND (p.who <> p.planter OR r.rolsuper OR p.what LIKE 'VIOLATION%')")
        PWNED_SEEN[$db]=$upto
        if [ -n "$bad" ]; then
            fail "$label: $db: $bad"
            escalated+=("$db")
        fi
    done
    size=$(qs postgres -c "SELECT size FROM pg_stat_file('server.log')")
    bad=$(qs postgres -c "SELECT pg_read_file('server.log', $LOG_SEEN, $size - $LOG_SEEN)" | { grep -o 'LOG:  pg_bge_attack who=.*' || true; } |
        sed -E 's/^LOG:  pg_bge_attack who=([^ ]*) planter=([^ ]*) what=(.*)$/\1 \2 \3/' |
        awk '$1 != $2 || $3 ~ /^VIOLATION/' | sort -u | awk 'NR <= 5' | tr '\n' ';')
    LOG_SEEN=$size
    [ -z "$bad" ] || fail "$label: the server log shows planted code run by another role (who planter what): $bad"
    bad=$(supers)
    if [ -n "$bad" ]; then
        fail "$label: now superuser: $bad"
        # Only with ATTACKS_KEEP_GOING=1: undo it, and stop the workers that keep redoing it.
        unsuper
        sleep 1.5
        if [ -n "$(supers)" ]; then
            for db in "${escalated[@]}"; do
                qs postgres -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '$db' AND backend_type = 'pg_bge vectorizer'" >/dev/null
            done
            sleep 1
            unsuper
        fi
    fi
    for entry in "${BOB_OBJECTS[@]}"; do
        IFS='|' read -r db idx ntrig <<<"$entry"
        [ "$(qs "$db" -c "SELECT count(*) FROM pg_class WHERE oid = ANY ('{$idx}'::oid[]) AND relkind = 'i'")" = "$(tr ',' '\n' <<<"$idx" | wc -l)" ] ||
            fail "$label: $db: an index of bob's (OIDs $idx) is gone"
        [ "$(qs "$db" -c "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'bob_s.bob_t'::regclass AND NOT tgisinternal")" = "$ntrig" ] ||
            fail "$label: $db: bob's triggers changed"
    done
    [ "$FAILURES" != "$before" ] || echo "ok: $label: nothing planted ran as a superuser or as another role; alice, bob, dbo, carol are not superusers; bob's indexes and triggers are there"
}
supers() {
    qs postgres -c "SELECT string_agg(rolname, ' ' ORDER BY rolname) FROM pg_roles WHERE rolname IN ('alice', 'bob', 'dbo', 'carol') AND rolsuper"
}
unsuper() {
    local role try
    for role in $(supers); do
        for try in 1 2 3 4 5; do
            qs postgres -c "ALTER ROLE $role NOSUPERUSER" 2>/dev/null && break
            sleep 0.3
        done
    done
}

qs postgres -c "CREATE ROLE alice LOGIN NOSUPERUSER" -c "CREATE ROLE bob LOGIN NOSUPERUSER" \
    -c "CREATE ROLE dbo LOGIN NOSUPERUSER" -c "CREATE ROLE carol LOGIN NOSUPERUSER IN ROLE pg_read_all_data"

echo "== 1. a trigger changes settings while the worker writes its batch"
mkdb atk1
as alice atk1 >/dev/null <<'SQL'
-- Operators and functions that win over pg_catalog's wherever alice_s comes first in the path
-- (or where pg_catalog has no exact match). Each returns the right answer, so nothing breaks.
CREATE FUNCTION alice_s.eq_regclass_oid(a regclass, b oid) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM public.atk_log('alice', 'attack 1: alice_s.=(regclass, oid)'); RETURN a::oid OPERATOR(pg_catalog.=) b; END $$;
CREATE OPERATOR alice_s.= (LEFTARG = regclass, RIGHTARG = oid, FUNCTION = alice_s.eq_regclass_oid);
CREATE FUNCTION alice_s.eq_oid_regclass(a oid, b regclass) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM public.atk_log('alice', 'attack 1: alice_s.=(oid, regclass)'); RETURN a OPERATOR(pg_catalog.=) b::oid; END $$;
CREATE OPERATOR alice_s.= (LEFTARG = oid, RIGHTARG = regclass, FUNCTION = alice_s.eq_oid_regclass);
CREATE FUNCTION alice_s.eq_name_text(a name, b text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM public.atk_log('alice', 'attack 1: alice_s.=(name, text)'); RETURN a OPERATOR(pg_catalog.=) b; END $$;
CREATE OPERATOR alice_s.= (LEFTARG = name, RIGHTARG = text, FUNCTION = alice_s.eq_name_text);
CREATE FUNCTION alice_s.plus_bigint(a bigint, b bigint) RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN PERFORM public.atk_log('alice', 'attack 1: alice_s.+(bigint, bigint)'); RETURN a OPERATOR(pg_catalog.+) b; END $$;
CREATE OPERATOR alice_s.+ (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = alice_s.plus_bigint);
CREATE FUNCTION alice_s.eq_tid(a tid, b tid) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM public.atk_log('alice', 'attack 1: alice_s.=(tid, tid)'); RETURN a OPERATOR(pg_catalog.=) b; END $$;
CREATE OPERATOR alice_s.= (LEFTARG = tid, RIGHTARG = tid, FUNCTION = alice_s.eq_tid);
CREATE FUNCTION alice_s.ne_tid(a tid, b tid) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM public.atk_log('alice', 'attack 1: alice_s.<>(tid, tid)'); RETURN a OPERATOR(pg_catalog.<>) b; END $$;
CREATE OPERATOR alice_s.<> (LEFTARG = tid, RIGHTARG = tid, FUNCTION = alice_s.ne_tid);
CREATE FUNCTION alice_s.cat_text(a text, b text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN PERFORM public.atk_log('alice', 'attack 1: alice_s.||(text, text)'); RETURN a OPERATOR(pg_catalog.||) b; END $$;
CREATE OPERATOR alice_s.|| (LEFTARG = text, RIGHTARG = text, FUNCTION = alice_s.cat_text);
CREATE FUNCTION alice_s.now() RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN PERFORM public.atk_log('alice', 'attack 1: alice_s.now()'); RETURN pg_catalog.now(); END $$;

-- a1_local: SET LOCAL search_path for the rest of the worker's transaction.
CREATE FUNCTION alice_s.trg_local() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'alice_s, pg_catalog', true);
    RETURN NEW;
END $$;
-- a1_session: SET (session-wide) search_path and settings the worker might read later.
CREATE FUNCTION alice_s.trg_session() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'alice_s, pg_catalog', false);
    BEGIN PERFORM pg_catalog.set_config('bge.device', 'cuda', false); EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN PERFORM pg_catalog.set_config('bge.precision', 'int8', false); EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN PERFORM pg_catalog.set_config('bge.truncate', 'off', false); EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN PERFORM pg_catalog.set_config('bge.model', 'all-MiniLM-L6-v2-cls512', false); EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN PERFORM pg_catalog.set_config('statement_timeout', '1', false); EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN PERFORM pg_catalog.set_config('lock_timeout', '1', false); EXCEPTION WHEN OTHERS THEN NULL; END;
    RETURN NEW;
END $$;
-- a1_role: tries to become someone else; whatever it manages, it logs as whoever it then is.
CREATE FUNCTION alice_s.trg_role() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    BEGIN PERFORM pg_catalog.set_config('role', 'postgres', false); EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN PERFORM pg_catalog.set_config('session_authorization', 'postgres', false); EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN PERFORM pg_catalog.set_config('role', 'bob', false); EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN PERFORM pg_catalog.set_config('session_replication_role', 'replica', false); EXCEPTION WHEN OTHERS THEN NULL; END;
    IF pg_catalog.current_setting('session_replication_role') OPERATOR(pg_catalog.<>) 'origin' THEN
        PERFORM public.atk_log('alice', 'VIOLATION: a table owner''s trigger set session_replication_role');
    END IF;
    PERFORM public.atk_log('alice', 'attack 1: a1_role trigger ran');
    RETURN NEW;
END $$;
-- a1_ro: every later transaction of the worker read-only.
CREATE FUNCTION alice_s.trg_ro() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_catalog.set_config('default_transaction_read_only', 'on', false);
    RETURN NEW;
END $$;
CREATE TABLE alice_s.a1_local (id int PRIMARY KEY, body text, emb real[]);
CREATE TABLE alice_s.a1_session (id int PRIMARY KEY, body text, emb real[]);
CREATE TABLE alice_s.a1_role (id int PRIMARY KEY, body text, emb real[]);
CREATE TABLE alice_s.a1_ro (id int PRIMARY KEY, body text, emb real[]);
CREATE TRIGGER a_hook BEFORE UPDATE ON alice_s.a1_local FOR EACH ROW EXECUTE FUNCTION alice_s.trg_local();
CREATE TRIGGER a_hook BEFORE UPDATE ON alice_s.a1_session FOR EACH ROW EXECUTE FUNCTION alice_s.trg_session();
CREATE TRIGGER a_hook BEFORE UPDATE ON alice_s.a1_role FOR EACH ROW EXECUTE FUNCTION alice_s.trg_role();
CREATE TRIGGER a_hook BEFORE UPDATE ON alice_s.a1_ro FOR EACH ROW EXECUTE FUNCTION alice_s.trg_ro();
INSERT INTO alice_s.a1_local SELECT g, 'alice local ' || g FROM generate_series(1, 3) g;
INSERT INTO alice_s.a1_session SELECT g, 'alice session ' || g FROM generate_series(1, 3) g;
INSERT INTO alice_s.a1_role SELECT g, 'alice role ' || g FROM generate_series(1, 3) g;
INSERT INTO alice_s.a1_ro SELECT g, 'alice read only ' || g FROM generate_series(1, 3) g;
SELECT bge_vectorize('alice_s.a1_local', 'body', 'emb', :'model');
SELECT bge_vectorize('alice_s.a1_session', 'body', 'emb', :'model');
SELECT bge_vectorize('alice_s.a1_role', 'body', 'emb', :'model');
SELECT bge_vectorize('alice_s.a1_ro', 'body', 'emb', :'model');
SQL
# bob's table comes after alice's in the worker's round (a higher OID).
make_bob atk1
A1_TABLES=(alice_s.a1_local alice_s.a1_session alice_s.a1_role alice_s.a1_ro bob_s.bob_t)
for round in 1 2; do
    if [ $round = 2 ]; then
        # Fresh rows, while whatever the first round's triggers set would still be in force.
        for t in "${A1_TABLES[@]}"; do
            owner=alice
            [ "$t" = bob_s.bob_t ] && owner=bob
            as $owner atk1 -c "INSERT INTO $t SELECT max(id) + 1, 'round two of $t' FROM $t"
        done
    fi
    filled=1
    for t in "${A1_TABLES[@]}"; do
        wait_filled atk1 "$t" 20 || { fail "attack 1, round $round: $t is not filled right"; filled=0; }
    done
    [ $filled = 0 ] || echo "ok: round $round: alice's four tables and bob's are filled, every vector equal to bge_embed(body, model)"
done
[ "$(qs atk1 -c "SELECT count(*) FROM public.pwned WHERE who = 'alice' AND what = 'attack 1: a1_role trigger ran'")" -gt 0 ] ||
    fail "attack 1: alice's a1_role trigger never ran as alice"
check_clean "1. settings changed by triggers"

echo "== 2. a database owner's operators in public and in the worker's \"\$user\" schema"
mkdb atk2 dbo
as dbo atk2 >/dev/null <<'SQL'
CREATE FUNCTION public.eq_oid_regclass(a oid, b regclass) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM public.atk_log('dbo', 'attack 2: public.=(oid, regclass)'); RETURN a OPERATOR(pg_catalog.=) b::oid; END $$;
CREATE OPERATOR public.= (LEFTARG = oid, RIGHTARG = regclass, FUNCTION = public.eq_oid_regclass);
-- "$user" comes first in the default search_path: a schema named after the worker's user.
CREATE SCHEMA postgres;
CREATE FUNCTION postgres.eq_regclass_oid(a regclass, b oid) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM public.atk_log('dbo', 'attack 2: postgres.=(regclass, oid)'); RETURN a::oid OPERATOR(pg_catalog.=) b; END $$;
CREATE OPERATOR postgres.= (LEFTARG = regclass, RIGHTARG = oid, FUNCTION = postgres.eq_regclass_oid);
CREATE FUNCTION postgres.eq_name_text(a name, b text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM public.atk_log('dbo', 'attack 2: postgres.=(name, text)'); RETURN a OPERATOR(pg_catalog.=) b; END $$;
CREATE OPERATOR postgres.= (LEFTARG = name, RIGHTARG = text, FUNCTION = postgres.eq_name_text);
GRANT USAGE ON SCHEMA postgres TO PUBLIC;
CREATE TABLE public.d2 (id int PRIMARY KEY, body text, emb real[]);
INSERT INTO public.d2 SELECT g, 'database owner row ' || g FROM generate_series(1, 3) g;
SELECT bge_vectorize('public.d2', 'body', 'emb', :'model');
SQL
before=$FAILURES
wait_filled atk2 public.d2 20 || fail "attack 2: dbo's table is not filled right"
as dbo atk2 -c "INSERT INTO public.d2 VALUES (4, 'database owner row 4')"
wait_filled atk2 public.d2 15 || fail "attack 2: dbo's fresh row is not filled right"
sleep 2 # a few more rounds of the worker's bookkeeping
[ "$FAILURES" != "$before" ] || echo "ok: dbo's table is filled right"
check_clean "2. database owner's operators"

echo "== 3. registrations: direct writes, relation kinds, other roles' tables, bge_vectorize_status"
mkdb atk3
# alice's tables first (lower OIDs: the worker reaches them before bob's), for sections 3, 5 and 7.
as alice atk3 >/dev/null <<'SQL'
CREATE FUNCTION alice_s.watch(what text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM public.atk_log('alice', what); RETURN true; END $$;
CREATE TABLE alice_s.a3 (id int PRIMARY KEY, body text, emb real[]);
INSERT INTO alice_s.a3 SELECT g, 'alice three ' || g FROM generate_series(1, 3) g;
ALTER TABLE alice_s.a3 ENABLE ROW LEVEL SECURITY;
ALTER TABLE alice_s.a3 FORCE ROW LEVEL SECURITY;
CREATE POLICY watch ON alice_s.a3 USING (alice_s.watch('attack 3: row security policy of alice_s.a3'));
GRANT SELECT ON alice_s.a3 TO PUBLIC;
-- Her rows stay pending (the worker's batches fail), so counting them runs her policy.
CREATE FUNCTION alice_s.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'alice_s.a3 refuses to be written'; END $$;
CREATE TRIGGER a_refuse BEFORE UPDATE ON alice_s.a3 FOR EACH ROW EXECUTE FUNCTION alice_s.refuse();
CREATE TABLE alice_s.a3x (id int, body text, emb real[]);
CREATE TABLE alice_s.a3conv (id int, body text, emb real[]);
INSERT INTO alice_s.a3conv VALUES (1, 'to become a view');
CREATE TABLE alice_s.a5 (id int, body text, emb real[]);
CREATE TABLE alice_s.bob_t (id int, body text, emb real[]);
CREATE TABLE alice_s.a5b (id int, body text, emb real[]);
CREATE TABLE alice_s.a7 (id int PRIMARY KEY, body text, emb real[]);
INSERT INTO alice_s.a7 VALUES (1, 'alice counts');
SELECT bge_vectorize(t, 'body', 'emb', :'model')
FROM unnest(ARRAY['alice_s.a3', 'alice_s.a3x', 'alice_s.a3conv', 'alice_s.a5', 'alice_s.bob_t', 'alice_s.a5b', 'alice_s.a7']::regclass[]) t;
-- Relations that are not tables (a partitioned table is one: vectorize.sql covers it).
CREATE VIEW alice_s.v3 AS SELECT t.ctid AS ctid, t.xmin AS xmin, t.id, t.body, t.emb FROM alice_s.a3 t
    WHERE alice_s.watch('attack 3: view alice_s.v3');
CREATE MATERIALIZED VIEW alice_s.m3 AS SELECT 1 AS id, 'x'::text AS body, NULL::real[] AS emb;
CREATE SEQUENCE alice_s.s3;
CREATE TABLE alice_s.p3 (id int, body text, emb real[]) PARTITION BY RANGE (id);
CREATE TABLE alice_s.p3_1 PARTITION OF alice_s.p3 FOR VALUES FROM (0) TO (100);
CREATE TYPE alice_s.c3 AS (id int, body text, emb real[]);
CREATE INDEX a3_body ON alice_s.a3 (body);
SQL
make_bob atk3
wait_filled atk3 bob_s.bob_t 20 || fail "attack 3: bob's table is not filled right"
before=$FAILURES
for i in $(seq 1 75); do
    [ "$(as alice atk3 -c "SELECT count(*) FROM bge_vectorize_status() WHERE tbl = 'alice_s.a3'::regclass AND last_error IS NOT NULL")" = 1 ] && break
    [ "$i" -lt 75 ] || fail "attack 3: alice's table, whose trigger fails, shows no last_error in bge_vectorize_status() after 15 s"
    sleep 0.2
done
[ "$FAILURES" != "$before" ] || echo "ok: alice's failing table: $(as alice atk3 -c "SELECT format('pending %s, last_error: %s', pending, last_error) FROM bge_vectorize_status() WHERE tbl = 'alice_s.a3'::regclass")"

for rel in alice_s.v3 alice_s.m3 alice_s.s3 alice_s.c3 alice_s.a3_body; do
    refused 42809 alice atk3 "bge_vectorize on $rel ($(qs atk3 -c "SELECT relkind FROM pg_class WHERE oid = '$rel'::regclass"))" <<<"SELECT bge_vectorize('$rel', 'body', 'emb', '$M')"
done
refused 42809 alice atk3 "bge_backfill on a view" <<<"CALL bge_backfill('alice_s.v3', 'body', 'emb')"
refused 42501 alice atk3 "bge_vectorize on bob's table" <<<"SELECT bge_vectorize('bob_s.bob_t', 'body', 'emb', '$M')"
refused 42501 alice atk3 "bge_unvectorize of bob's table" <<<"SELECT bge_unvectorize('bob_s.bob_t')"
refused 42501 alice atk3 "direct INSERT into bge_vectorized (a view of hers)" <<SQL
INSERT INTO public.bge_vectorized (tbl, source, target, model, truncate, precision) VALUES ('alice_s.v3', 'body', 'emb', '$M', true, 'fp32')
SQL
refused 42501 alice atk3 "direct INSERT into bge_vectorized (DEFAULT VALUES)" <<<"INSERT INTO public.bge_vectorized DEFAULT VALUES"
refused 42501 alice atk3 "direct UPDATE of bge_vectorized (model)" <<<"UPDATE public.bge_vectorized SET model = 'all-MiniLM-L6-v2-cls512' WHERE tbl = 'alice_s.a3'::regclass"
refused 42501 alice atk3 "direct UPDATE of bge_vectorized (tbl to her materialized view)" <<<"UPDATE public.bge_vectorized SET tbl = 'alice_s.m3'::regclass WHERE tbl = 'alice_s.a3x'::regclass"
refused 42501 alice atk3 "direct DELETE from bge_vectorized" <<<"DELETE FROM public.bge_vectorized WHERE tbl = 'alice_s.a3'::regclass AND target = 'no such column'"
refused 42501 alice atk3 "direct INSERT into bge_vectorize_errors" <<<"INSERT INTO public.bge_vectorize_errors (tbl, target, row_ctid, row_xmin, row_key, error) VALUES ('alice_s.a3', 'emb', '(0,1)', '1', 'id=1', 'x')"
refused 42501 alice atk3 "direct DELETE from bge_vectorize_errors" <<<"DELETE FROM public.bge_vectorize_errors"
# An administrator (and a monitoring role) look at the status: alice's policy may run, as alice only.
before=$FAILURES
for who in carol postgres; do
    got=$(try_as $who atk3 <<<"SELECT tbl, pending, last_error FROM bge_vectorize_status()")
    [ "$got" = ok ] || fail "attack 3: bge_vectorize_status() as $who failed: $got"
done
[ "$(as carol atk3 -c "SELECT count(*) FROM bge_vectorize_status() WHERE tbl = 'alice_s.a3'::regclass")" = 1 ] ||
    fail "attack 3: carol (pg_read_all_data) does not see alice's table in bge_vectorize_status()"
[ "$(as alice atk3 -c "SELECT count(*) FROM bge_vectorize_status() WHERE tbl = 'alice_s.a3'::regclass")" = 1 ] ||
    fail "attack 3: alice does not see her own table in bge_vectorize_status()"
[ "$FAILURES" != "$before" ] || echo "ok: bge_vectorize_status() as carol, postgres and alice"
check_clean "3. registrations and status"

if [ "$(qs atk3 -c "SELECT current_setting('server_version_num')::int < 160000")" = t ]; then
    echo "-- alice turns her vectorized table alice_s.a3conv into a view in place (CREATE RULE \"_RETURN\", same OID)"
    as alice atk3 >/dev/null <<'SQL'
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT tgname FROM pg_catalog.pg_trigger WHERE tgrelid = 'alice_s.a3conv'::regclass AND NOT tgisinternal LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON alice_s.a3conv', r.tgname);
    END LOOP;
    FOR r IN SELECT indexrelid::regclass AS i FROM pg_catalog.pg_index WHERE indrelid = 'alice_s.a3conv'::regclass LOOP
        EXECUTE pg_catalog.format('DROP INDEX %s', r.i);
    END LOOP;
END $$;
DELETE FROM alice_s.a3conv;
SQL
    as alice atk3 -c "VACUUM alice_s.a3conv"
    got=$(try_as alice atk3 <<'SQL'
CREATE RULE "_RETURN" AS ON SELECT TO alice_s.a3conv DO INSTEAD
    SELECT 1::int AS id, 'converted'::text AS body, NULL::real[] AS emb WHERE alice_s.watch('attack 3: table alice_s.a3conv turned into a view');
SQL
    )
    if [ "$got" = ok ]; then
        before=$FAILURES
        [ "$(qs atk3 -c "SELECT relkind FROM pg_class WHERE oid = 'alice_s.a3conv'::regclass")" = v ] || fail "attack 3: the conversion did not happen"
        for who in postgres carol; do
            got=$(try_as $who atk3 <<<"SELECT tbl, pending, last_error FROM bge_vectorize_status()")
            [ "$got" = ok ] || fail "attack 3: bge_vectorize_status() as $who fails once alice's table is a view: $got"
        done
        as bob atk3 -c "INSERT INTO bob_s.bob_t VALUES (100, 'bob writes after the conversion')"
        wait_filled atk3 bob_s.bob_t 15 || fail "attack 3: bob's fresh row is not filled right after alice's table became a view"
        [ "$FAILURES" != "$before" ] || echo "ok: status still answers and bob is still served after alice's table became a view"
        check_clean "3. table turned into a view"
    else
        echo "note: PostgreSQL refused to turn the table into a view ($got): skipped"
    fi
else
    echo "(PostgreSQL 16+ cannot turn a table into a view: that variant is skipped)"
fi

echo "== 4. CALL bge_backfill by a superuser on alice's table, alice may create in public"
mkdb atk4
qs atk4 -c "GRANT CREATE ON SCHEMA public TO alice"
as alice atk4 >/dev/null <<'SQL'
CREATE TABLE public.alice_t (id int PRIMARY KEY, body text, emb real[]);
INSERT INTO public.alice_t SELECT g, 'backfilled row ' || g || repeat(' with words', g % 5) FROM generate_series(1, 20) g;
-- Logs who runs it, and leaves a session-wide search_path with public before pg_catalog.
CREATE FUNCTION public.alice_t_trg() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.atk_log('alice', 'attack 4: trigger of alice_t');
    PERFORM pg_catalog.set_config('search_path', 'public, pg_catalog', false);
    RETURN NEW;
END $$;
CREATE TRIGGER a_watch BEFORE UPDATE ON public.alice_t FOR EACH ROW EXECUTE FUNCTION public.alice_t_trg();
GRANT SELECT, UPDATE ON public.alice_t TO bob;
-- A target type of hers, filled through her assignment cast from real[].
CREATE TYPE public.alice_vec AS (v real[]);
CREATE FUNCTION public.to_alice_vec(a real[]) RETURNS public.alice_vec LANGUAGE plpgsql AS $$
BEGIN PERFORM public.atk_log('alice', 'attack 4: assignment cast real[] -> alice_vec'); RETURN ROW(a)::public.alice_vec; END $$;
CREATE CAST (real[] AS public.alice_vec) WITH FUNCTION public.to_alice_vec(real[]) AS ASSIGNMENT;
CREATE TABLE public.alice_t2 (id int PRIMARY KEY, body text, emb public.alice_vec);
INSERT INTO public.alice_t2 SELECT g, 'cast row ' || g FROM generate_series(1, 5) g;
SQL
# Better matches than pg_catalog's (polymorphic, variadic or binary-coercible) signatures.
plant alice atk4 "public.cardinality(text[])" <<'SQL'
CREATE FUNCTION public.cardinality(a text[]) RETURNS integer LANGUAGE plpgsql AS $$
BEGIN PERFORM public.atk_log('alice', 'attack 4: public.cardinality(text[])'); RETURN pg_catalog.cardinality(a); END $$;
SQL
plant alice atk4 "public.array_to_string(text[], text)" <<'SQL'
CREATE FUNCTION public.array_to_string(a text[], d text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN PERFORM public.atk_log('alice', 'attack 4: public.array_to_string(text[], text)'); RETURN pg_catalog.array_to_string(a, d); END $$;
SQL
plant alice atk4 "public.||(text[], text[])" <<'SQL'
CREATE FUNCTION public.atk_cat(a text[], b text[]) RETURNS text[] LANGUAGE plpgsql AS $$
BEGIN PERFORM public.atk_log('alice', 'attack 4: public.||(text[], text[])'); RETURN a OPERATOR(pg_catalog.||) b; END $$;
CREATE OPERATOR public.|| (LEFTARG = text[], RIGHTARG = text[], FUNCTION = public.atk_cat);
SQL
plant alice atk4 "public./(bigint, double precision)" <<'SQL'
CREATE FUNCTION public.atk_div(a bigint, b double precision) RETURNS double precision LANGUAGE plpgsql AS $$
BEGIN PERFORM public.atk_log('alice', 'attack 4: public./(bigint, double precision)'); RETURN a::double precision OPERATOR(pg_catalog./) b; END $$;
CREATE OPERATOR public./ (LEFTARG = bigint, RIGHTARG = double precision, FUNCTION = public.atk_div);
SQL
plant alice atk4 "public.format(text, regclass, name, name)" <<'SQL'
CREATE FUNCTION public.format(f text, a regclass, b name, c name) RETURNS text LANGUAGE plpgsql AS $$
BEGIN PERFORM public.atk_log('alice', 'attack 4: public.format(text, regclass, name, name)'); RETURN pg_catalog.format(f, a, b, c); END $$;
SQL
plant alice atk4 "public.format(text, regclass, text, text)" <<'SQL'
CREATE FUNCTION public.format(f text, a regclass, b text, c text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN PERFORM public.atk_log('alice', 'attack 4: public.format(text, regclass, text, text)'); RETURN pg_catalog.format(f, a, b, c); END $$;
SQL
plant alice atk4 "public.round(double precision)" <<'SQL'
CREATE FUNCTION public.round(a double precision) RETURNS double precision LANGUAGE plpgsql AS $$
BEGIN PERFORM public.atk_log('alice', 'attack 4: public.round(double precision)'); RETURN pg_catalog.round(a); END $$;
SQL
plant alice atk4 "public.=(oid, regclass) and public.=(regclass, oid)" <<'SQL'
CREATE FUNCTION public.eq_oid_regclass(a oid, b regclass) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM public.atk_log('alice', 'attack 4: public.=(oid, regclass)'); RETURN a OPERATOR(pg_catalog.=) b::oid; END $$;
CREATE OPERATOR public.= (LEFTARG = oid, RIGHTARG = regclass, FUNCTION = public.eq_oid_regclass);
CREATE FUNCTION public.eq_regclass_oid(a regclass, b oid) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM public.atk_log('alice', 'attack 4: public.=(regclass, oid)'); RETURN a::oid OPERATOR(pg_catalog.=) b; END $$;
CREATE OPERATOR public.= (LEFTARG = regclass, RIGHTARG = oid, FUNCTION = public.eq_regclass_oid);
SQL
plant alice atk4 "public.bge_backfill_batch(regclass, name, name, text, integer, text, text[])" <<'SQL'
CREATE FUNCTION public.bge_backfill_batch(tbl regclass, source name, target name, model text, max_rows integer, after text, skip text[])
RETURNS TABLE (rows integer, tokens bigint, last_ctid text, failed_ctids text[], failed text[]) LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.atk_log('alice', 'attack 4: public.bge_backfill_batch(regclass, name, name, ...)');
    RETURN QUERY SELECT * FROM public.bge_backfill_batch(tbl::oid, source::text, target::text, model, max_rows, after, skip);
END $$;
SQL
# The administrator, with the default search_path.
path_before=$(as postgres atk4 -c "SHOW search_path")
out=$(as postgres atk4 -c "CALL bge_backfill('alice_t', 'body', 'emb')" -c "SHOW search_path" 2>"$WORK/backfill.err") ||
    fail "attack 4: the superuser's bge_backfill of alice_t failed: $(cat "$WORK/backfill.err")"
if [ "$out" = "$path_before" ]; then
    echo "ok: the caller's search_path is still $path_before"
else
    fail "attack 4: bge_backfill left the caller's search_path changed: '$path_before' became '$out'"
fi
out=$(as postgres atk4 -c "CALL bge_backfill('alice_t2', 'body', 'emb', batch_tokens => 64, progress => '0 s')" 2>&1) ||
    fail "attack 4: the superuser's bge_backfill of alice_t2 failed: $out"
before=$FAILURES
for t in public.alice_t "public.alice_t2|(emb).v"; do
    [ "$(qs atk4 -c "SELECT count(*) FROM ${t%%|*} WHERE emb IS NULL")" = 0 ] || fail "attack 4: ${t%%|*} has rows left NULL"
    expr=emb
    [ "$t" = "${t%%|*}" ] || expr=${t#*|}
    [ "$(wrong atk4 "${t%%|*}" "$expr")" = 0 ] || fail "attack 4: ${t%%|*} has rows that differ from bge_embed(body)"
done
[ "$FAILURES" != "$before" ] || echo "ok: both of alice's tables are filled, every vector equal to bge_embed(body, model)"
if [ "$(qs atk4 -c "SELECT count(*) FROM public.pwned WHERE what = 'attack 4: trigger of alice_t' AND who = 'alice'")" -gt 0 ]; then
    echo "ok: alice's trigger ran as alice"
else
    fail "attack 4: alice's trigger did not run as alice during the superuser's backfill"
fi
check_clean "4. superuser's backfill"
as alice atk4 -c "UPDATE public.alice_t SET emb = NULL WHERE id <= 3"
refused 42501 bob atk4 "bob's bge_backfill of alice's table (she granted him SELECT, UPDATE)" <<<"CALL bge_backfill('public.alice_t', 'body', 'emb')"
check_clean "4. bob's backfill"
# Better matches for the other internal helpers, and the calls that reach them: alice's
# bge_vectorize, the administrator's and bob's bge_vectorize_status, the administrator's
# bge_unvectorize.
plant alice atk4 "public.bge_backfill_begin(regclass, name, name, text, integer, double precision)" <<'SQL'
CREATE FUNCTION public.bge_backfill_begin(r regclass, s name, t name, m text, b integer, p double precision) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.atk_log('alice', 'attack 4: public.bge_backfill_begin(regclass, name, name, ...)');
    PERFORM public.bge_backfill_begin(r::oid, s::text, t::text, m, b, p);
END $$;
SQL
plant alice atk4 "public.bge_vectorize_register(regclass, name, name, text, boolean, text, regclass)" <<'SQL'
CREATE FUNCTION public.bge_vectorize_register(r regclass, s name, t name, m text, tr boolean, p text, i regclass) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.atk_log('alice', 'attack 4: public.bge_vectorize_register(regclass, name, name, ...)');
    PERFORM public.bge_vectorize_register(r::oid, s::text, t::text, m, tr, p, i::oid);
END $$;
SQL
plant alice atk4 "public.bge_vectorize_unregister(regclass, name)" <<'SQL'
CREATE FUNCTION public.bge_vectorize_unregister(r regclass, t name) RETURNS TABLE (target text, pending_index oid) LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.atk_log('alice', 'attack 4: public.bge_vectorize_unregister(regclass, name)');
    RETURN QUERY SELECT u.target, u.pending_index FROM public.bge_vectorize_unregister(r::oid, t::text) u;
END $$;
SQL
plant alice atk4 "public.bge_vectorize_pending(regclass, name, name)" <<'SQL'
CREATE FUNCTION public.bge_vectorize_pending(r regclass, s name, t name) RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.atk_log('alice', 'attack 4: public.bge_vectorize_pending(regclass, name, name)');
    RETURN public.bge_vectorize_pending(r::oid, s::text, t::text);
END $$;
SQL
as alice atk4 >/dev/null <<'SQL'
CREATE TABLE public.alice_t3 (id int PRIMARY KEY, body text, emb real[]);
INSERT INTO public.alice_t3 SELECT g, 'vectorized next to planted helpers ' || g FROM generate_series(1, 3) g;
GRANT SELECT ON public.alice_t3 TO bob;
SELECT bge_vectorize('alice_t3', 'body', 'emb', :'model');
SQL
wait_filled atk4 public.alice_t3 20 || fail "attack 4: alice_t3 is not filled right"
for who in postgres bob; do
    got=$(try_as $who atk4 <<<"SELECT tbl, pending, last_error FROM bge_vectorize_status()")
    [ "$got" = ok ] || fail "attack 4: bge_vectorize_status() as $who failed: $got"
done
got=$(try_as postgres atk4 <<<"SELECT bge_unvectorize('alice_t3')")
[ "$got" = ok ] || fail "attack 4: the administrator's bge_unvectorize('alice_t3') failed: $got"
check_clean "4. vectorize, status and unvectorize next to planted helpers"

echo "== 5. bge_unvectorize by the administrator must not drop bob's index"
BOB_PENDING=$(qs atk3 -c "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = 'bob_s.bob_t'::regclass AND NOT i.indisprimary LIMIT 1")
BOB_PENDING_OID=$(qs atk3 -c "SELECT i.indexrelid FROM pg_index i WHERE i.indrelid = 'bob_s.bob_t'::regclass AND NOT i.indisprimary LIMIT 1")
[ -n "$BOB_PENDING" ] || fail "attack 5: bob's table has no index besides its primary key"
echo "bob's pending-row index: bob_s.$BOB_PENDING"
if [ "$(qs atk3 -c "SELECT count(*) FROM pg_attribute WHERE attrelid = 'public.bge_vectorized'::regclass AND attname = 'pending_index' AND NOT attisdropped")" = 1 ]; then
    refused 42501 alice atk3 "direct UPDATE of pending_index to bob's index" <<<"UPDATE public.bge_vectorized SET pending_index = $BOB_PENDING_OID::oid::regclass WHERE tbl = 'alice_s.a5'::regclass"
else
    refused 42501 alice atk3 "direct UPDATE of bge_vectorized (no pending_index column any more)" <<<"UPDATE public.bge_vectorized SET source = source WHERE tbl = 'alice_s.a5'::regclass"
fi
as postgres atk3 -c "SELECT bge_unvectorize('alice_s.a5')" >/dev/null || fail "attack 5: the administrator's bge_unvectorize('alice_s.a5') failed"
check_clean "5. unvectorize after a pending_index rewrite"
# Her table has bob's table's name (in her schema), so its index has bob's index's name.
ALICE_BOB_T_IDX=$(qs atk3 -c "SELECT string_agg(indexrelid::text, ',') FROM pg_index WHERE indrelid = 'alice_s.bob_t'::regclass")
as postgres atk3 -c "SET search_path = bob_s, public" -c "SELECT bge_unvectorize('alice_s.bob_t')" >/dev/null ||
    fail "attack 5: the administrator's bge_unvectorize('alice_s.bob_t') failed"
[ "$(qs atk3 -c "SELECT count(*) FROM pg_class WHERE oid = ANY ('{$ALICE_BOB_T_IDX}'::oid[])")" = 0 ] ||
    fail "attack 5: bge_unvectorize('alice_s.bob_t') left its own index"
check_clean "5. unvectorize of alice's table named like bob's"
# Her pending index renamed to bob's index's name.
got=$(try_as alice atk3 <<SQL
DO \$\$ BEGIN EXECUTE pg_catalog.format('ALTER INDEX %s RENAME TO %I',
    (SELECT indexrelid::regclass FROM pg_catalog.pg_index WHERE indrelid = 'alice_s.a5b'::regclass LIMIT 1), '$BOB_PENDING'); END \$\$
SQL
)
[ "$got" = ok ] || echo "note: alice could not rename her index to bob's index's name: $got"
as postgres atk3 -c "SET search_path = bob_s, public" -c "SELECT bge_unvectorize('alice_s.a5b')" >/dev/null ||
    fail "attack 5: the administrator's bge_unvectorize('alice_s.a5b') failed"
check_clean "5. unvectorize of alice's table whose index has bob's index's name"

echo "== 6. a trigger that sleeps 30 s (and one that catches query_canceled) must not hold up bob"
mkdb atk6
mkdb atk6b
as alice atk6 >/dev/null <<'SQL'
CREATE FUNCTION alice_s.slow() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE deadline timestamptz := pg_catalog.clock_timestamp() + interval '30 s';
BEGIN
    WHILE pg_catalog.clock_timestamp() < deadline AND (SELECT go FROM public.atk_ctl) LOOP
        PERFORM pg_catalog.pg_sleep(0.1);
    END LOOP;
    RETURN NEW;
END $$;
SQL
as alice atk6b >/dev/null <<'SQL'
CREATE FUNCTION alice_s.slow() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE deadline timestamptz := pg_catalog.clock_timestamp() + interval '30 s';
BEGIN
    LOOP
        BEGIN
            EXIT WHEN pg_catalog.clock_timestamp() >= deadline OR NOT (SELECT go FROM public.atk_ctl);
            PERFORM pg_catalog.pg_sleep(0.1);
        EXCEPTION WHEN query_canceled THEN
            PERFORM public.atk_log('alice', 'attack 6: cancel caught, sleeping on');
        END;
    END LOOP;
    RETURN NEW;
END $$;
SQL
for db in atk6 atk6b; do
    as alice $db >/dev/null <<'SQL'
CREATE TABLE alice_s.a6 (id int PRIMARY KEY, body text, emb real[]);
CREATE TRIGGER a_slow BEFORE UPDATE ON alice_s.a6 FOR EACH ROW EXECUTE FUNCTION alice_s.slow();
INSERT INTO alice_s.a6 VALUES (1, 'alice is slow');
SELECT bge_vectorize('alice_s.a6', 'body', 'emb', :'model');
SQL
    make_bob $db
done
# Wait until each worker is inside alice's trigger, then bob writes.
for db in atk6 atk6b; do
    for i in $(seq 1 40); do
        [ "$(qs postgres -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_bge vectorizer' AND datname = '$db' AND wait_event = 'PgSleep'")" = 1 ] && break
        [ "$i" -lt 40 ] || echo "note: the worker of $db was not seen inside alice's trigger"
        sleep 0.2
    done
done
t0=$EPOCHREALTIME
for db in atk6 atk6b; do
    as bob $db -c "INSERT INTO bob_s.bob_t VALUES (10, 'bob writes while alice sleeps')"
done
for db in atk6 atk6b; do
    left=$((15 - ${EPOCHREALTIME%.*} + ${t0%.*}))
    if wait_filled $db bob_s.bob_t $((left > 0 ? left : 0)); then
        echo "ok: $db: bob's fresh row filled right $(awk "BEGIN { printf \"%.1f\", $EPOCHREALTIME - $t0 }") s after his insert"
    else
        fail "attack 6: $db: bob's fresh row is not filled right within 15 s of his insert, behind alice's sleeping trigger"
    fi
done
for db in atk6 atk6b; do
    until [ "$(as alice $db -c "SELECT count(*) FROM bge_vectorize_status() WHERE tbl = 'alice_s.a6'::regclass AND last_error IS NOT NULL")" = 1 ]; do
        [ "$(awk "BEGIN { print ($EPOCHREALTIME - $t0 > 15) }")" = 0 ] || break
        sleep 0.2
    done
    err=$(as alice $db -c "SELECT last_error FROM bge_vectorize_status() WHERE tbl = 'alice_s.a6'::regclass")
    if [ -n "$err" ]; then
        echo "ok: $db: alice's status row: $err"
    else
        fail "attack 6: $db: alice's status row shows no last_error 15 s after bob's insert"
    fi
done
release_sleepers
check_clean "6. sleeping triggers"

echo "== 7. counters written through the registration table"
refused 42501 alice atk3 "direct UPDATE of rows_done to the bigint maximum" <<<"UPDATE public.bge_vectorized SET rows_done = 9223372036854775807 WHERE tbl = 'alice_s.a7'::regclass"
refused 42501 alice atk3 "direct UPDATE of tokens_done to the bigint maximum" <<<"UPDATE public.bge_vectorized SET tokens_done = 9223372036854775807 WHERE tbl = 'alice_s.a7'::regclass"
refused 42501 alice atk3 "INSERT ... ON CONFLICT DO UPDATE of rows_done" <<SQL
INSERT INTO public.bge_vectorized (tbl, source, target, model, truncate, precision) VALUES ('alice_s.a7', 'body', 'emb', '$M', true, 'fp32')
ON CONFLICT (tbl, target) DO UPDATE SET rows_done = 9223372036854775807
SQL
as alice atk3 -c "INSERT INTO alice_s.a7 SELECT g, 'alice counts ' || g FROM generate_series(2, 6) g"
before=$FAILURES
as bob atk3 -c "INSERT INTO bob_s.bob_t VALUES (200, 'bob writes after the counters')"
wait_filled atk3 bob_s.bob_t 15 || fail "attack 7: bob's fresh row is not filled right within 15 s"
wait_filled atk3 alice_s.a7 15 || fail "attack 7: alice's fresh rows are not filled right within 15 s"
[ "$FAILURES" != "$before" ] || echo "ok: the worker serves bob and alice"
check_clean "7. counters"

echo "== 8. huge texts: a batch reads at most 64 MB of them, and every row still comes out right"
# Twelve rows of 8 MB (compressed to almost nothing on disk): the worker and bge_backfill read
# them in several batches instead of holding 96 MB at once; bob is served meanwhile.
as alice atk3 -c "CREATE TABLE alice_s.a8 (id int PRIMARY KEY, body text, emb real[])" \
    -c "INSERT INTO alice_s.a8 SELECT g, g || repeat(' huge text', 800000) FROM generate_series(1, 12) g" \
    -c "CREATE TABLE alice_s.a8b (LIKE alice_s.a8 INCLUDING ALL)" -c "INSERT INTO alice_s.a8b SELECT * FROM alice_s.a8"
as alice atk3 -c "SELECT public.bge_vectorize('alice_s.a8', 'body', 'emb', '$M')" >/dev/null
as alice atk3 -c "CALL public.bge_backfill('alice_s.a8b', 'body', 'emb', '$M')" 2>/dev/null
as bob atk3 -c "INSERT INTO bob_s.bob_t VALUES (300, 'bob writes beside huge texts')"
wait_filled atk3 bob_s.bob_t 15 || fail "8: bob's fresh row is not filled right within 15 s"
wait_filled atk3 alice_s.a8 60 || fail "8: alice's huge rows are not all filled right by the worker"
wait_filled atk3 alice_s.a8b 1 || fail "8: alice's huge rows are not all filled right by bge_backfill"
echo "ok: huge texts filled right by the worker and by bge_backfill"
check_clean "8. huge texts"

if [ $FAILURES -ne 0 ]; then
    echo "FAIL: $FAILURES violations" >&2
    exit 1
fi
echo "ok: every attack refused or harmless ($((SECONDS - START)) s)"
