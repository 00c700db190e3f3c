#!/usr/bin/env bash
# pg_bge's per-row SQL statement forms against the array form, on the same rows, in a real
# PostgreSQL, in-process and through the model server. all-MiniLM-L6-v2, named in every call:
#   A  SELECT count(*) FROM bge_embed((SELECT array_agg(body ORDER BY id) FROM t), m)  (reference)
#   B  SELECT count(bge_embed(body, m)) FROM t
#   C  CREATE TABLE c AS SELECT id, bge_embed(body, m) AS e FROM t          (dropped after)
#   D  INSERT INTO i (id, e) SELECT id, bge_embed(body, m) FROM t            (i empty; truncated after)
#   E  UPDATE u SET e = bge_embed(body, m)          (u a fresh copy of t with e real[] NULL)
# t(id int primary key, body text) holds the corpus's non-empty lines. Tokens are
# sum(bge_token_count(body, m)) over t; each form's tokens/s and its ratio to A are reported
# for two modes, each in its own scratch cluster and one psql session:
#   in-process:   pg_bge not preloaded, bge.server = off (the backend computes);
#   model server: shared_preload_libraries = 'pg_bge', bge.server = on (its worker computes).
# After a warm-up call (so that no model load is timed) the session prints EXPLAIN (COSTS OFF)
# of B to E, then runs the rounds interleaved (A B C D E, A B C D E, ...), timed with psql's
# \timing; the fastest round of each form is reported. Parallel workers of a parallel plan are
# new processes: in-process, each loads its own copy of the model inside the timed statement.
# Through the model server each form's line also shows the server's counters over its fastest
# round (bge_server_status(): requests, forward passes, tokens). The title of each mode shows
# bge.executor_batching (per-row calls batched by the executor), which the plans reflect.
#
#   bash benches/statement_forms_bench.sh [ROUNDS=5] [CORPUS=benches/corpus.txt]
# PG_BGE_PG picks the major (default 15), THREADS sets bge.threads (default 2; in the model
# server's cluster it is also the server's threads). Needs the extension installed
# (scripts/postgres/install.sh); uses the scratch cluster of scripts/postgres/cluster.sh
# (restarted). benches/make_corpus.py writes a corpus of any size.
set -euo pipefail
ROUNDS=${1:-5}
CORPUS=${2:-}
[ -z "$CORPUS" ] || CORPUS=$(realpath "$CORPUS")
cd "$(dirname "$0")/.."
. scripts/postgres/versions.sh
export PG_BGE_PG
THREADS=${THREADS:-2}
MODEL=all-MiniLM-L6-v2
WORK=/tmp/pg_bge_statement_forms_bench
SHAREDIR=$("$(pg_config_of "$PG_BGE_PG")" --sharedir)
[ -f "$SHAREDIR/extension/pg_bge.control" ] || { echo "pg_bge is not installed in PostgreSQL $PG_BGE_PG (scripts/postgres/install.sh)" >&2; exit 1; }
[ -d "$SHAREDIR/bge_models/$MODEL" ] || { echo "no $MODEL in $SHAREDIR/bge_models" >&2; exit 1; }
if [ -z "$CORPUS" ]; then
    [ -f benches/corpus.txt ] || python3 benches/make_corpus.py benches/corpus.txt 1000
    CORPUS=$PWD/benches/corpus.txt
fi
rm -rf "$WORK" && mkdir -p "$WORK"
python3 - "$CORPUS" >"$WORK/t.csv" <<'EOF'
import csv, sys
lines = [l.strip() for l in open(sys.argv[1], encoding="utf-8") if l.strip()]
csv.writer(sys.stdout).writerows((i, l) for i, l in enumerate(lines, 1))
EOF

M="'$MODEL'"
declare -A STMT=(
    [A]="SELECT count(*) FROM bge_embed((SELECT array_agg(body ORDER BY id) FROM t), $M)"
    [B]="SELECT count(bge_embed(body, $M)) FROM t"
    [C]="CREATE TABLE c AS SELECT id, bge_embed(body, $M) AS e FROM t"
    [D]="INSERT INTO i (id, e) SELECT id, bge_embed(body, $M) FROM t"
    [E]="UPDATE u SET e = bge_embed(body, $M)"
)
FORMS="A B C D E"
# What follows each form, untimed: a check that every row got its vector, then the reset.
declare -A AFTER=(
    [A]=""
    [B]=""
    [C]="$(printf '%s\n' "SELECT bge_bench_check('c');" "DROP TABLE c;")"
    [D]="$(printf '%s\n' "SELECT bge_bench_check('i');" "TRUNCATE i;")"
    [E]="$(printf '%s\n' "SELECT bge_bench_check('u');" "DROP TABLE u;" "CREATE TABLE u AS SELECT id, body, NULL::real[] AS e FROM t;" \
        "ALTER TABLE u ADD PRIMARY KEY (id);" "VACUUM ANALYZE u;")"
)

sql() { scripts/postgres/cluster.sh psql -d postgres -qAtX -v ON_ERROR_STOP=1 "$@"; }

# run_mode NAME SERVER(on|off) SETTINGS...: one cluster, one session; leaves $WORK/NAME.log
# (the session's stdout: markers, \timing lines, server counters) and $WORK/NAME.plans.
run_mode() {
    local name=$1 server=$2 r f
    shift 2
    scripts/postgres/cluster.sh start "bge.threads = $THREADS" "bge.server = $server" "$@" >/dev/null
    sql <<SQL
CREATE EXTENSION pg_bge;
CREATE TABLE t (id int PRIMARY KEY, body text NOT NULL);
\\copy t FROM '$WORK/t.csv' WITH (FORMAT csv)
VACUUM ANALYZE t;
CREATE TABLE i (id int, e real[]);
CREATE TABLE u AS SELECT id, body, NULL::real[] AS e FROM t;
ALTER TABLE u ADD PRIMARY KEY (id);
VACUUM ANALYZE u;
CREATE FUNCTION bge_bench_check(tab regclass) RETURNS void LANGUAGE plpgsql AS \$\$
DECLARE n bigint; good bigint;
BEGIN
    SELECT count(*) INTO n FROM t;
    EXECUTE format('SELECT count(*) FROM %s WHERE array_length(e, 1) = 384', tab) INTO good;
    IF good <> n THEN RAISE EXCEPTION '%: % of % rows have a 384-dimensional vector', tab, good, n; END IF;
END \$\$;
SQL
    {
        echo "SET application_name = 'statement_forms_bench';"
        echo "SELECT count(*) FROM bge_embed((SELECT array_agg(body ORDER BY id) FROM (SELECT id, body FROM t ORDER BY id LIMIT 16) w), $M);"
        echo "SELECT count(bge_embed(body, $M)) FROM (SELECT body FROM t ORDER BY id LIMIT 4) w;"
        echo "SELECT coalesce(current_setting('bge.executor_batching', true), '(not a setting)') AS batching \\gset"
        echo "\\echo BATCHING :batching"
        echo '\pset format unaligned'
        echo '\pset tuples_only on'
        echo "\\o $WORK/$name.plans"
        for f in B C D E; do
            echo "\\qecho '$f  ${STMT[$f]//\'/\'\'}'"
            echo "EXPLAIN (COSTS OFF) ${STMT[$f]};"
        done
        echo "\\o /dev/null"
        for r in $(seq "$ROUNDS"); do
            for f in $FORMS; do
                if [ "$server" = on ]; then
                    echo "SELECT requests AS r0, batches AS b0, tokens AS k0 FROM bge_server_status() \\gset"
                fi
                echo "\\echo TIMED $r $f"
                echo '\timing on'
                echo "${STMT[$f]};"
                echo '\timing off'
                if [ "$server" = on ]; then
                    echo "SELECT requests AS r1, batches AS b1, tokens AS k1 FROM bge_server_status() \\gset"
                    echo "\\echo SERVER $r $f :r0 :b0 :k0 :r1 :b1 :k1"
                fi
                [ -z "${AFTER[$f]}" ] || echo "${AFTER[$f]}"
            done
        done
    } >"$WORK/$name.sql"
    scripts/postgres/cluster.sh psql -d postgres -qX -v ON_ERROR_STOP=1 -f "$WORK/$name.sql" >"$WORK/$name.log"
}

trap 'scripts/postgres/cluster.sh stop' EXIT
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; load average at start $(cut -d' ' -f1-3 /proc/loadavg)"
echo "PostgreSQL $PG_BGE_PG, bge.threads = $THREADS, $MODEL, corpus $CORPUS, $ROUNDS rounds"
run_mode inprocess off
TOKENS=$(sql -c "SELECT sum(bge_token_count(body, $M)) FROM t")
ROWS=$(sql -c "SELECT count(*) FROM t")
run_mode server on "shared_preload_libraries = 'pg_bge'"
echo "load average at end $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$WORK" "$ROUNDS" "$ROWS" "$TOKENS" "$FORMS" "${STMT[A]}" "${STMT[B]}" "${STMT[C]}" "${STMT[D]}" "${STMT[E]}" <<'EOF'
import os, sys
work, rounds, rows, tokens, forms = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5].split()
stmt = dict(zip(forms, sys.argv[6:]))
short = {"A": "array form", "B": "SELECT count(bge_embed(...))", "C": "CREATE TABLE AS",
         "D": "INSERT ... SELECT", "E": "UPDATE"}
print(f"{rows} rows, {tokens} tokens (sum of bge_token_count)")
modes = (("inprocess", "in-process (bge.server = off, pg_bge not preloaded)"),
         ("server", "model server (shared_preload_libraries = 'pg_bge', bge.server = on)"))
best = {}
for mode, title in modes:
    times = {f: [] for f in forms}
    server = {f: [] for f in forms}
    lines = open(os.path.join(work, f"{mode}.log")).read().splitlines()
    for k, line in enumerate(lines):
        if line.startswith("TIMED "):
            _, r, f = line.split()
            t = next(l for l in lines[k + 1:] if l.startswith("Time: "))
            times[f].append(float(t.split()[1]) / 1000)
        elif line.startswith("SERVER "):
            _, r, f, r0, b0, k0, r1, b1, k1 = line.split()
            server[f].append((int(r1) - int(r0), int(b1) - int(b0), int(k1) - int(k0)))
    assert all(len(times[f]) == rounds for f in forms), times
    batching = next(l.split(None, 1)[1] for l in lines if l.startswith("BATCHING "))
    print(f"\n== {title}, bge.executor_batching = {batching}")
    print("plans, EXPLAIN (COSTS OFF):")
    for l in open(os.path.join(work, f"{mode}.plans")).read().splitlines():
        if l.strip():
            print(("   " if l[:1] in "BCDE" and l[1:3] == "  " else "      ") + l)
    print(f"fastest of {rounds} interleaved rounds (tokens/s = {tokens} tokens / that round's seconds; all rounds in s):")
    a = min(times["A"])
    for f in forms:
        t = min(times[f])
        best[(mode, f)] = a / t
        extra = ""
        if server[f]:
            req, bat, tok = server[f][times[f].index(t)]
            extra = f"  [server: {req} requests, {bat} forward passes, {tok} tokens]"
        print(f"   {f} {short[f]:29} {t:8.3f} s {tokens / t:9,.0f} tokens/s  {a / t:5.2f}x A"
              f"   ({' '.join(f'{x:.2f}' for x in times[f])}){extra}")
print(f"\n== each form's tokens/s / the array form's (A), fastest round of {rounds} of each")
print(f"   {'form':33} {'in-process':>10} {'model server':>13}")
for f in forms:
    print(f"   {f} {short[f]:31} {best[('inprocess', f)]:10.2f} {best[('server', f)]:13.2f}")
EOF
