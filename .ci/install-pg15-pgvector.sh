#!/usr/bin/env bash
# Install PostgreSQL 15 (Debian 12's own packages) and pgvector 0.8.0 built from Debian
# trixie's source package, so the integration suite can run against a second server
# (PG2QDRANT_TEST_SERVER=pg15; see tests/conftest.py).
#
# - Idempotent: when PostgreSQL 15, its headers and pgvector 0.8.0 are already installed it
#   only re-checks them (a throwaway cluster creates the extension) and prints where they are.
# - The trixie source comes through a PRIVATE apt configuration (its own sources list,
#   lists and cache in a temporary folder): the system's apt sources and lists are not
#   changed.
# - Built with OPTFLAGS="" (pgvector's default -march=native makes a binary that can crash
#   on another CPU).
# - Touches no cluster it did not create: services are kept from starting during the apt
#   step, an installed postgresql-15 is kept at its installed version (an upgrade would stop
#   running clusters), and a 'main' cluster that Debian's package creates during THIS run is
#   left stopped and set to start manually. The check cluster lives in a temporary folder,
#   listens on a unix socket there only, and is removed.
# Exits non-zero with a message saying what failed.
set -euo pipefail

PG_MAJOR=15
PGVECTOR_VERSION=0.8.0
MIRROR="${PG2QDRANT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
BINDIR=/usr/lib/postgresql/$PG_MAJOR/bin
PG_CONFIG=$BINDIR/pg_config

me=install-pg15-pgvector
log() { echo "$me: $*"; }
die() { echo "$me: ERROR: $*" >&2; exit 1; }
t0=$(date +%s.%N)
elapsed() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

[ "$(id -u)" = 0 ] || die "run as root (it installs packages with apt-get and runs make install)."
command -v apt-get >/dev/null && command -v dpkg-query >/dev/null \
    || die "needs a Debian system with apt-get (PostgreSQL $PG_MAJOR comes from Debian 12 'bookworm')."

# One run at a time on a machine (apt has its own lock, 'make install' has none).
exec 9>/var/lock/pg2qdrant-install-pg15-pgvector.lock
flock -w 900 9 || die "another run of this script holds /var/lock/pg2qdrant-install-pg15-pgvector.lock."

work=$(mktemp -d /tmp/pg2qdrant-pgvector.XXXXXX)
policy_created=0
check_pgdata=""
cleanup() {
    if [ -n "$check_pgdata" ] && [ -f "$check_pgdata/postmaster.pid" ]; then
        runuser -u postgres -- "$BINDIR/pg_ctl" -D "$check_pgdata" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    if [ "$policy_created" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
    rm -rf "$work"
}
trap cleanup EXIT

installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]; }

# --- 1. Debian packages ------------------------------------------------------------------
packages=(postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR make gcc)
missing=()
for p in "${packages[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing with apt-get: ${missing[*]}"
    clusters_before=$(ls -1 /etc/postgresql/$PG_MAJOR 2>/dev/null || true)
    # Keep package scripts from starting (or restarting) any PostgreSQL service.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\n# pg2qdrant install-pg15-pgvector.sh: no service starts during its apt step\nexit 101\n' \
            > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy_created=1
    fi
    # An installed server is kept at its version: upgrading it would stop running clusters.
    request=()
    for p in "${missing[@]}"; do request+=("$p"); done
    if installed postgresql-$PG_MAJOR; then
        request+=("postgresql-$PG_MAJOR=$(dpkg-query -W -f='${Version}' postgresql-$PG_MAJOR)")
    fi
    # A cluster that Debian's package creates during this run is ours to keep out of the way.
    settle_new_clusters() {
        local c
        for c in $(ls -1 /etc/postgresql/$PG_MAJOR 2>/dev/null || true); do
            if ! grep -qx "$c" <<<"$clusters_before" && [ -f "/etc/postgresql/$PG_MAJOR/$c/start.conf" ]; then
                log "Debian's package created cluster $PG_MAJOR/$c: leaving it stopped, start mode 'manual'"
                pg_ctlcluster "$PG_MAJOR" "$c" stop >/dev/null 2>&1 || true
                echo manual > "/etc/postgresql/$PG_MAJOR/$c/start.conf"
            fi
        done
    }
    apt_install() {
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            -o DPkg::Lock::Timeout=600 "${request[@]}" >"$work/apt-install.log" 2>&1
    }
    if ! apt_install; then
        log "apt-get install failed; refreshing the package lists (apt-get update) and retrying"
        apt-get update -q -o DPkg::Lock::Timeout=600 >"$work/apt-update.log" 2>&1 \
            || { tail -20 "$work/apt-update.log" >&2; die "apt-get update failed (see above)."; }
        apt_install || { tail -30 "$work/apt-install.log" >&2; settle_new_clusters
            die "apt-get install ${request[*]} failed (see above). PostgreSQL $PG_MAJOR needs Debian 12 (bookworm) package lists."; }
    fi
    settle_new_clusters
    if [ "$policy_created" = 1 ]; then rm -f /usr/sbin/policy-rc.d; policy_created=0; fi
    log "packages installed (${SECONDS}s so far)"
else
    log "packages already installed: ${packages[*]}"
fi
[ -x "$PG_CONFIG" ] || die "$PG_CONFIG is missing after installing postgresql-server-dev-$PG_MAJOR."
SHAREDIR=$("$PG_CONFIG" --sharedir)
PKGLIBDIR=$("$PG_CONFIG" --pkglibdir)

# --- 2. pgvector from Debian trixie's source package -----------------------------------
have_version() {
    [ -f "$SHAREDIR/extension/vector.control" ] && [ -f "$PKGLIBDIR/vector.so" ] \
        && [ -f "$SHAREDIR/extension/vector--$PGVECTOR_VERSION.sql" ] \
        && grep -q "^default_version = '$PGVECTOR_VERSION'" "$SHAREDIR/extension/vector.control"
}
if have_version; then
    log "pgvector $PGVECTOR_VERSION already installed in $PKGLIBDIR"
else
    [ -r "$KEYRING" ] || die "$KEYRING is missing (package debian-archive-keyring)."
    apt_dir=$work/apt
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/sources.list.d" \
             "$apt_dir/preferences.d" "$work/src"
    echo "deb-src [signed-by=$KEYRING] $MIRROR trixie main" > "$apt_dir/sources.list"
    cat > "$apt_dir/apt.conf" <<EOF
Dir::Etc::SourceList "$apt_dir/sources.list";
Dir::Etc::SourceParts "$apt_dir/sources.list.d";
Dir::Etc::Preferences "$apt_dir/preferences";
Dir::Etc::PreferencesParts "$apt_dir/preferences.d";
Dir::State::Lists "$apt_dir/lists";
Dir::Cache "$apt_dir/cache";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
APT::Sandbox::User "root";
EOF
    export APT_CONFIG="$apt_dir/apt.conf"
    log "fetching the pgvector source package from Debian trixie (private apt configuration in $apt_dir)"
    if ! apt-get update -q >"$work/src-update.log" 2>&1 || ! ls "$apt_dir/lists/"*_Sources* >/dev/null 2>&1; then
        tail -20 "$work/src-update.log" >&2
        die "could not read Debian trixie's source index from $MIRROR (see above)."
    fi
    versions=$(apt-cache showsrc pgvector 2>/dev/null | awk '/^Version:/ {print $2}' | sort -V || true)
    deb_version=$(grep -E "^$PGVECTOR_VERSION-" <<<"$versions" | tail -1 || true)
    if [ -z "$deb_version" ]; then
        die "Debian trixie has no pgvector $PGVECTOR_VERSION source package (found: $(echo ${versions:-none}))."
    fi
    (cd "$work/src" && apt-get source -q --download-only "pgvector=$deb_version") >"$work/src-get.log" 2>&1 \
        || { tail -20 "$work/src-get.log" >&2; die "apt-get source pgvector=$deb_version failed (see above)."; }
    unset APT_CONFIG
    orig=$(ls "$work/src"/pgvector_"$PGVECTOR_VERSION".orig.tar.* 2>/dev/null | head -1)
    [ -n "$orig" ] || die "the downloaded source package has no pgvector_$PGVECTOR_VERSION.orig tarball."
    # apt-get checked the files against the signed index. dpkg-source applies Debian's
    # patches; without it (no dpkg-dev) the upstream tarball is built as is.
    if command -v dpkg-source >/dev/null; then
        (cd "$work/src" && dpkg-source -x "pgvector_$deb_version.dsc" build) >"$work/unpack.log" 2>&1 \
            || { tail -20 "$work/unpack.log" >&2; die "dpkg-source could not unpack pgvector_$deb_version.dsc."; }
    else
        mkdir -p "$work/src/build" && tar -xf "$orig" -C "$work/src/build" --strip-components=1 \
            || die "could not unpack $orig."
    fi
    log "building pgvector $PGVECTOR_VERSION (Debian $deb_version) with OPTFLAGS=\"\""
    make -C "$work/src/build" -j"$(nproc)" PG_CONFIG="$PG_CONFIG" OPTFLAGS="" >"$work/build.log" 2>&1 \
        || { tail -30 "$work/build.log" >&2; die "building pgvector failed (see above)."; }
    make -C "$work/src/build" PG_CONFIG="$PG_CONFIG" OPTFLAGS="" install >"$work/install.log" 2>&1 \
        || { tail -30 "$work/install.log" >&2; die "make install of pgvector failed (see above)."; }
    have_version || die "pgvector $PGVECTOR_VERSION is not in $SHAREDIR/extension after make install."
    log "pgvector $PGVECTOR_VERSION installed into $PKGLIBDIR"
fi

# --- 3. check on a throwaway cluster of our own -----------------------------------------
id postgres >/dev/null 2>&1 || die "the 'postgres' user is missing (created by package postgresql-common)."
check_dir=$(mktemp -d /var/tmp/pg2qdrant-pg15-check.XXXXXX)
chown postgres: "$check_dir"
check_pgdata=$check_dir/data
as_pg() { (cd / && runuser -u postgres -- "$@"); }
as_pg "$BINDIR/initdb" -D "$check_pgdata" -U postgres -A trust --no-sync >"$work/check.log" 2>&1 \
    || { tail -20 "$work/check.log" >&2; rm -rf "$check_dir"; die "initdb of the check cluster failed."; }
as_pg "$BINDIR/pg_ctl" -D "$check_pgdata" -l "$check_dir/log" -w -t 60 \
    -o "-c listen_addresses='' -k $check_dir -p 5999" start >>"$work/check.log" 2>&1 \
    || { tail -20 "$check_dir/log" >&2; rm -rf "$check_dir"; die "the check cluster did not start."; }
result=$(as_pg "$BINDIR/psql" -h "$check_dir" -p 5999 -U postgres -d postgres -XAtq -v ON_ERROR_STOP=1 -c "
    CREATE EXTENSION vector;
    SELECT extversion FROM pg_extension WHERE extname = 'vector';
    SELECT ('[1,2,3]'::vector <-> '[1,2,4]'::vector)::text || ' ' || ('[1,2]'::halfvec)::text
           || ' ' || ('{1:1,3:2}/3'::sparsevec)::text || ' ' || (B'101' <~> B'111')::text;" 2>&1) \
    || { as_pg "$BINDIR/pg_ctl" -D "$check_pgdata" -m immediate -w stop >/dev/null 2>&1 || true
         rm -rf "$check_dir"; die "pgvector does not work on PostgreSQL $PG_MAJOR: $result"; }
as_pg "$BINDIR/pg_ctl" -D "$check_pgdata" -m fast -w stop >/dev/null 2>&1 || true
check_pgdata=""
rm -rf "$check_dir"
[ "$(head -1 <<<"$result")" = "$PGVECTOR_VERSION" ] \
    || die "the check cluster reports pgvector '$(head -1 <<<"$result")', expected $PGVECTOR_VERSION."

log "OK in $(elapsed)s: $("$BINDIR/postgres" --version), pgvector $PGVECTOR_VERSION (check: $(tail -1 <<<"$result"))"
log "binaries: $BINDIR"
log "run the suite on it: PG2QDRANT_TEST_SERVER=pg15 python -m pytest   (or PG2QDRANT_PG_BINDIR=$BINDIR)"
