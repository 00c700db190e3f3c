#!/usr/bin/env bash
# The binary packages as a user without Rust gets them (scripts/package.sh builds them):
#   1. PostgreSQL 15: the source-built pg_bge files are removed from Debian's PostgreSQL 15 and
#      the .deb installed with dpkg -i; dpkg -L lists every file the extension needs (the
#      library, the control file, each install and upgrade script) and dpkg --verify finds them
#      intact.
#   2. PostgreSQL 18: the tarball holds those files at the paths the tree's pg_config gives,
#      relative to its prefix; it is unpacked into a copy of the tree without pg_bge.
#   3. On each, a scratch cluster runs pg_regress `setup goldens` (CREATE EXTENSION, the
#      sentence-transformers goldens; the same expected output as scripts/test.sh), and every
#      older install script creates its version in a database of its own, updated to the
#      current version where an upgrade script leads there, and embeds.
# On exit, whatever happened, the package is purged and the source-built files are put back
# (compared with the saved copies), so the machine is left as it was found. It swaps the files
# of Debian's PostgreSQL 15 meanwhile: run it alone, not beside other tests that use them.
#
#   tests/operations/package.sh MODEL_DIR     (as scripts/models/make_test_models.py makes it)
set -euo pipefail
cd "$(dirname "$0")/../.."
MODELS=${1:?usage: tests/operations/package.sh MODEL_DIR}
MODELS=${MODELS%/}
. scripts/postgres/versions.sh
PKG=postgresql-15-pg-bge
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
ARCH=$(dpkg --print-architecture)
DEB=target/packages/${PKG}_${VERSION}_$ARCH.deb
TARBALL=$PWD/target/packages/pg_bge-$VERSION-pg18-$ARCH.tar.gz
PGC15=$(pg_config_of 15)
LIB15=$("$PGC15" --pkglibdir)
EXT15=$("$PGC15" --sharedir)/extension
PG18_ORIG=$PG_BGE_PG18_DIR
WORK=$(mktemp -d /tmp/pg_bge_package.XXXXXX)
chmod 755 "$WORK" # the clusters' user reads the PostgreSQL 18 copy in it

fail() {
    echo "FAIL: $*" >&2
    exit 1
}
cluster15() { PG_BGE_PG=15 PG_BGE_CLUSTER=/tmp/pg_bge_cluster_pkg PG_BGE_PORT=5561 scripts/postgres/cluster.sh "$@"; }
cluster18() { PG_BGE_PG=18 PG_BGE_PG18_DIR=$WORK/pg18 PG_BGE_CLUSTER=/tmp/pg_bge_cluster_pkg18 PG_BGE_PORT=5563 scripts/postgres/cluster.sh "$@"; }
installed() { dpkg-query -W -f='${Status}' "$PKG" 2>/dev/null | grep -q 'ok installed'; }

scripts/package.sh
for f in "$DEB" "$TARBALL"; do [ -f "$f" ] || fail "scripts/package.sh made no $f"; done
! installed || fail "$PKG is installed already; this test would remove it (dpkg -r $PKG first)"

# Older releases' install scripts (sql/pg_bge--<version>.sql): each package must carry them.
old_versions=()
for f in sql/pg_bge--*.sql; do
    v=${f#sql/pg_bge--}; v=${v%.sql}
    if [ -e "$f" ] && [[ $v != *--* ]] && [ "$v" != "$VERSION" ]; then old_versions+=("$v"); fi
done
# needed_files EXTDIR: every file of the extension a package must install there.
needed_files() {
    echo "$1/pg_bge.control"
    echo "$1/pg_bge--$VERSION.sql"
    for f in sql/pg_bge--*--*.sql; do
        if [ -e "$f" ]; then echo "$1/${f#sql/}"; fi
    done
    for v in "${old_versions[@]}"; do echo "$1/pg_bge--$v.sql"; done
}

# The source-built install, saved before anything is touched and put back on exit.
backup=()
for f in "$LIB15/pg_bge.so" "$EXT15"/pg_bge.control "$EXT15"/pg_bge--*.sql; do
    if [ -e "$f" ]; then backup+=("$f"); fi
done
for f in "${backup[@]}"; do
    mkdir -p "$WORK/saved$(dirname "$f")"
    cp -p "$f" "$WORK/saved$f"
done
remove_source_built() { rm -f "$LIB15/pg_bge.so" "$EXT15"/pg_bge.control "$EXT15"/pg_bge--*.sql; }
restore() {
    local status=$?
    set +e # put back as much as possible, whatever fails
    cluster15 stop
    cluster18 stop 2>/dev/null
    rm -rf /tmp/pg_bge_cluster_pkg /tmp/pg_bge_cluster_pkg18
    if dpkg-query -W "$PKG" >/dev/null 2>&1 && ! dpkg --purge "$PKG" >"$WORK/purge.log" 2>&1; then
        cat "$WORK/purge.log" >&2
        status=1
    fi
    remove_source_built
    for f in "${backup[@]}"; do
        if ! cp -p "$WORK/saved$f" "$f" || ! cmp -s "$WORK/saved$f" "$f"; then
            echo "FAIL: could not put back $f; the saved copies are in $WORK/saved" >&2
            exit 1
        fi
    done
    rm -rf "$WORK"
    exit $status
}
trap restore EXIT

echo "== the .deb in Debian's PostgreSQL 15, the source-built files removed"
remove_source_built
dpkg -i "$DEB" >"$WORK/dpkg.log" 2>&1 || { cat "$WORK/dpkg.log" >&2; fail "dpkg -i $DEB"; }
dpkg -L "$PKG" >"$WORK/listed"
for f in "$LIB15/pg_bge.so" "$("$PGC15" --sharedir)/contrib/pg_bge/fetch.sh" $(needed_files "$EXT15"); do
    grep -qxF "$f" "$WORK/listed" || fail "dpkg -L $PKG does not list $f"
    [ -f "$f" ] || fail "$f, listed by dpkg -L $PKG, does not exist"
done
! grep -q '/pg_bge\.sql$' "$WORK/listed" || fail "$PKG ships sql/pg_bge.sql (it belongs inside pg_bge--$VERSION.sql)"
dpkg --verify "$PKG" || fail "dpkg --verify $PKG: installed files differ from the package"
[[ $(dpkg-query -W -f='${Depends}' "$PKG") == postgresql-15,* ]] || fail "$PKG does not depend on postgresql-15"
! ldd "$LIB15/pg_bge.so" | grep 'not found' || fail "pg_bge.so from $PKG needs the libraries above"

echo "== the PostgreSQL 18 tarball, unpacked into a copy of the tree without pg_bge"
PGC18=$(pg_config_of 18)
prefix18=$(dirname "$("$PGC18" --bindir)")
lib18=$("$PGC18" --pkglibdir)
ext18=$("$PGC18" --sharedir)/extension
tar -tzf "$TARBALL" >"$WORK/tarball"
for f in "$lib18/pg_bge.so" $(needed_files "$ext18"); do
    grep -qxF "${f#"$prefix18"/}" "$WORK/tarball" || fail "$TARBALL lacks ${f#"$prefix18"/}"
done
! grep -E '^/|(^|/)\.\.(/|$)|/$' "$WORK/tarball" || fail "$TARBALL holds the entries above (a directory, an absolute path or ..)"
cp -a "$PG18_ORIG" "$WORK/pg18"
copy18=$WORK/pg18${prefix18#"$PG18_ORIG"}
rm -f "$copy18/${lib18#"$prefix18"/}/pg_bge.so" "$copy18/${ext18#"$prefix18"/}"/pg_bge*
tar -xzf "$TARBALL" -C "$copy18"

# smoke MAJOR: pg_regress `setup goldens`, then each older version created and updated.
smoke() {
    local major=$1 pgc out=$WORK/regress$1 db want update got
    pgc=$(PG_BGE_PG18_DIR=$WORK/pg18 pg_config_of "$major")
    echo "== PostgreSQL $major from the package: CREATE EXTENSION and the goldens (pg_regress setup goldens)"
    "cluster$major" start "bge.model_dir = '$MODELS'"
    mkdir -p "$out"
    if ! "$("$pgc" --pkglibdir)/pgxs/src/test/regress/pg_regress" --bindir="$("$pgc" --bindir)" \
        --host=/tmp --port="$("cluster$major" port)" --user=postgres --inputdir=tests/pg_regress \
        --outputdir="$out" --dbname=pg_bge_regress setup goldens; then
        head -100 "$out/regression.diffs" 2>/dev/null || true
        fail "pg_regress setup goldens on PostgreSQL $major from the package"
    fi
    for v in "${old_versions[@]}"; do
        db=pg_bge_v${v//./_}
        want=$v update=()
        if [ -e "sql/pg_bge--$v--$VERSION.sql" ]; then want=$VERSION update=(-c "ALTER EXTENSION pg_bge UPDATE"); fi
        echo "== PostgreSQL $major: CREATE EXTENSION pg_bge VERSION '$v' ${update[*]:+then ALTER EXTENSION pg_bge UPDATE}"
        "cluster$major" psql -qAt -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE $db" >/dev/null
        got=$("cluster$major" psql -qAt -v ON_ERROR_STOP=1 -d "$db" -c "CREATE EXTENSION pg_bge VERSION '$v'" "${update[@]}" \
            -c "SELECT extversion || ' ' || array_length(bge_embed('package smoke test', 'all-MiniLM-L6-v2'), 1) FROM pg_extension WHERE extname = 'pg_bge'") ||
            fail "CREATE EXTENSION pg_bge VERSION '$v' ${update[*]:+and UPDATE }on PostgreSQL $major from the package"
        [ "$got" = "$want 384" ] || fail "PostgreSQL $major, from version $v: got '$got', want '$want 384' (extversion, dimensions)"
    done
    "cluster$major" stop
}
smoke 15
smoke 18
echo "== packages: PASS"
