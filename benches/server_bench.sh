#!/usr/bin/env bash
# The model server against in-process computing (bge.server = off), both measured in one run,
# in one PostgreSQL 15 cluster that preloads pg_bge:
#   (a) memory: 16 connections embed with a random-weight bge-large-shaped model (24 layers,
#       1024 hidden; benches/make_random_model.py); RSS and PSS of the server and the backends,
#       against in-process connections (4 of them: 16 copies of 1.3 GB would not fit 24 GB).
#   (b) throughput: 16 concurrent pgbench clients, each running single-text
#       SELECT bge_embed(body) on all-MiniLM-L6-v2; tokens/s and the server's texts per pass.
#   (c) latency: one client, a 16-token text, median of per-call latencies (pgbench log), the
#       two paths in alternating rounds.
#
#   benches/server_bench.sh [SECONDS]     (SECONDS per throughput and latency run, default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/postgres/versions.sh
export PG_BGE_PG=15
SECS=${1:-20}
BIN=$(dirname "$(pg_config_of 15)")
WORK=/tmp/pg_bge_server_bench
rm -rf "$WORK" && mkdir -p "$WORK/models" && chmod 755 "$WORK"
MINILM="$("$(pg_config_of 15)" --sharedir)/bge_models/all-MiniLM-L6-v2"
cp -r "$MINILM" "$WORK/models/"
python3 benches/make_random_model.py "$MINILM" "$WORK/models/bge-large-random"
chmod -R a+rX "$WORK"
scripts/postgres/cluster.sh start "bge.model_dir = '$WORK/models'" "shared_preload_libraries = 'pg_bge'" "max_connections = 50"
trap 'scripts/postgres/cluster.sh stop' EXIT
sql() { scripts/postgres/cluster.sh psql -d postgres -qAtX -v ON_ERROR_STOP=1 "$@"; }
sql -c "CREATE EXTENSION pg_bge"
PORT=$(scripts/postgres/cluster.sh port)

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"

# kB of RSS and PSS of the given pids, summed.
mem_kb() {
    local rss=0 pss=0 pid
    for pid in "$@"; do
        rss=$((rss + $(awk '/^Rss:/ {print $2}' "/proc/$pid/smaps_rollup")))
        pss=$((pss + $(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup")))
    done
    echo "$rss $pss"
}

# hold N APP SERVER: N connections that embed once with bge-large-random, then sleep.
hold() {
    local n=$1 app=$2 server=$3 k
    for k in $(seq 1 "$n"); do
        PGOPTIONS="-c bge.server=$server" sql -c "SET application_name = '$app'" \
            -c "SELECT bge_embed('memory probe $k', 'bge-large-random') IS NOT NULL" -c "SELECT pg_sleep(600)" >/dev/null 2>&1 &
    done
    while [ "$(sql -c "SELECT count(*) FROM pg_stat_activity WHERE application_name = '$app' AND wait_event = 'PgSleep'")" != "$n" ]; do
        sleep 0.5
    done
}
pids_of() { sql -c "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity WHERE application_name = '$1'"; }
release() {
    sql -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '$1'" >/dev/null
    wait 2>/dev/null || true
}

echo "== (a) memory, bge-large-shaped model ($(du -m "$WORK/models/bge-large-random/model.safetensors" | cut -f1) MB of f32 weights)"
hold 4 mem_local off
read -r local_rss local_pss <<<"$(mem_kb $(pids_of mem_local))"
release mem_local
one_copy=$((local_rss / 4))
hold 16 mem_server on
worker=$(sql -c "SELECT pid FROM bge_server_status()")
read -r server_rss server_pss <<<"$(mem_kb "$worker" $(pids_of mem_server))"
read -r worker_rss _ <<<"$(mem_kb "$worker")"
release mem_server
echo "   in-process: 4 connections RSS $((local_rss / 1024)) MB (PSS $((local_pss / 1024)) MB): one connection with its copy $((one_copy / 1024)) MB; 16 would be ~$((16 * one_copy / 1024)) MB"
echo "   server:     worker + 16 connections RSS $((server_rss / 1024)) MB (PSS $((server_pss / 1024)) MB); worker $((worker_rss / 1024)) MB"
echo "   server total / one in-process copy: RSS $(python3 -c "print(f'{$server_rss / $one_copy:.2f}')")x, PSS $(python3 -c "print(f'{$server_pss / ($local_pss / 4):.2f}')")x (in-process 16 connections: ~16x)"

echo "== (b) throughput: 16 concurrent clients, single-text bge_embed on all-MiniLM-L6-v2, $SECS s each"
python3 - "$WORK/texts.csv" <<'EOF'
import csv, sys
lines = [l.strip() for l in open("benches/corpus.txt", encoding="utf-8") if l.strip()][:480]
with open(sys.argv[1], "w", newline="", encoding="utf-8") as f:
    csv.writer(f).writerows([i, l] for i, l in enumerate(lines))
EOF
sql -c "CREATE TABLE texts (id int PRIMARY KEY, body text)" -c "\\copy texts FROM '$WORK/texts.csv' WITH (FORMAT csv)"
tokens=$(sql -c "SELECT avg(bge_token_count(body)) FROM texts")
printf '\\set id random(0, 479)\nSELECT bge_embed(body) FROM texts WHERE id = :id;\n' >"$WORK/one_text.sql"
run_pgbench() { # MODE CLIENTS SECONDS EXTRA...
    local mode=$1 clients=$2 secs=$3
    shift 3
    PGOPTIONS="-c bge.server=$mode" "$BIN/pgbench" -h /tmp -p "$PORT" -U postgres -n -c "$clients" -j 2 -T "$secs" "$@" postgres 2>&1
}
tps_of() { grep -oP 'tps = \K[0-9.]+' | head -1; }
read -r requests0 batches0 <<<"$(sql -F ' ' -c "SELECT requests, batches FROM bge_server_status()")"
server_tps=$(run_pgbench on 16 "$SECS" -f "$WORK/one_text.sql" | tps_of)
read -r requests1 batches1 <<<"$(sql -F ' ' -c "SELECT requests, batches FROM bge_server_status()")"
local_tps=$(run_pgbench off 16 "$SECS" -f "$WORK/one_text.sql" | tps_of)
python3 - "$server_tps" "$local_tps" "$tokens" "$((requests1 - requests0))" "$((batches1 - batches0))" <<'EOF'
import sys
s, l, tok, req, bat = (float(x) for x in sys.argv[1:])
print(f"   mean text {tok:.1f} tokens")
print(f"   in-process: {l:.1f} calls/s = {l * tok:,.0f} tokens/s")
print(f"   server:     {s:.1f} calls/s = {s * tok:,.0f} tokens/s ({s / l:.2f}x in-process), {req / bat:.1f} texts per forward pass")
EOF

echo "== (c) latency: one client, a 16-token text, $SECS s each, in alternating rounds of 2 s"
query="how many people live in the capital city of france and its suburbs today"
echo "   text: '$query' ($(sql -c "SELECT bge_token_count('$query')") tokens)"
printf "SELECT bge_embed('%s');\n" "$query" >"$WORK/latency.sql"
rm -f "$WORK"/lat_*
# Alternating short rounds, so that this VM's drift in speed falls on both paths alike.
for round in $(seq 1 $((SECS / 2))); do
    for mode in on off; do
        (cd "$WORK" && run_pgbench "$mode" 1 2 -f latency.sql -l --log-prefix="lat_${mode}_$round" >/dev/null)
    done
done
python3 - "$WORK" <<'EOF'
import glob, os, statistics, sys
for mode, name in (("on", "server"), ("off", "in-process")):
    lat = []
    for f in glob.glob(os.path.join(sys.argv[1], f"lat_{mode}_*")):
        calls = [int(line.split()[2]) / 1000 for line in open(f)]
        lat += calls[1:]  # each round's first call follows a new connection
    lat.sort()
    print(f"   {name:11} median {statistics.median(lat):.3f} ms, p90 {lat[int(len(lat) * 0.9)]:.3f} ms over {len(lat)} calls")
EOF
