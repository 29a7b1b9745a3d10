#!/usr/bin/env bash
# postgres-instance.sh start|stop|status|promote DIR PORT
# postgres-instance.sh standby DIR PORT PRIMARY_PORT
#
# A private PostgreSQL cluster (Debian's postgresql package: initdb, pg_ctl) with its data in
# DIR/data, listening on 127.0.0.1:PORT (or PG_HOST:PORT) only (and a unix socket in DIR/run), owned by the
# postgres user when run as root (PostgreSQL refuses to run as root), else by the caller.
#
#   start DIR PORT    initdb DIR/data when it does not exist yet (UTF8, locale C, trust
#                     authentication on loopback only, superuser "postgres"), then start the
#                     server and wait until it accepts connections. Already running: nothing.
#   stop DIR PORT     pg_ctl stop -m fast on DIR/data (only that cluster).
#   status DIR PORT   exit 0 when the cluster of DIR runs and answers on PORT.
#   standby DIR PORT PRIMARY_PORT
#                     a streaming standby of the cluster on 127.0.0.1:PRIMARY_PORT: when DIR/data
#                     does not exist yet, pg_basebackup -R copies the primary (standby.signal,
#                     primary_conninfo); then start as above. It answers read-only queries.
#   promote DIR PORT  pg_ctl promote: the standby becomes a primary (failover).
#
# Replication: every cluster accepts replication connections from 127.0.0.0/8. For no lost
# commit on failover, start the primary with PG_OPTS="-c synchronous_standby_names=*": a
# commit then returns only once the standby has it.
#
# Connect with postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable.
# Environment: PG_HOST (default 127.0.0.1) is the loopback address to listen on (the lab uses
# its service address, so that labs on other PEC_LAB_NETs do not collide); PG_BIN overrides the directory of initdb/pg_ctl (default: the newest
# /usr/lib/postgresql/*/bin); PG_OPTS adds server options (-c name=value ...).
# The server log is DIR/postgres.log.
#
# The store's tests (pec/store/postgres, TestMain) start their own cluster with it:
#   integration/scripts/postgres-instance.sh start "$dir" 55432
#   ... ; integration/scripts/postgres-instance.sh stop "$dir" 55432
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ $# -ge 3 ] || die "usage: postgres-instance.sh start|stop|status|promote DIR PORT, or standby DIR PORT PRIMARY_PORT"
cmd=$1 dir=$2 port=$3 primary=${4:-}
[[ $port =~ ^[0-9]+$ ]] || die "port $port is not a number"
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
data=$dir/data log=$dir/postgres.log run=$dir/run host=${PG_HOST:-127.0.0.1}
[[ $host =~ ^127\. ]] || die "PG_HOST=$host is not a loopback address"

bin=${PG_BIN:-}
if [ -z "$bin" ]; then
	bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
fi
[ -n "$bin" ] && [ -x "$bin/pg_ctl" ] && [ -x "$bin/initdb" ] ||
	die "PostgreSQL not found (no /usr/lib/postgresql/*/bin/pg_ctl): run integration/scripts/install-packages.sh first"

# as CMD...: run CMD as the cluster's owner (postgres when we are root).
as() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

running() { as "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; }

case $cmd in
stop)
	if [ -f "$data/PG_VERSION" ] && running; then
		as "$bin/pg_ctl" -D "$data" -m fast -w -t 60 stop >>"$log" 2>&1 || { show_log postgres "$log"; die "pg_ctl stop failed"; }
	fi
	exit 0
	;;
status)
	[ -f "$data/PG_VERSION" ] && running && tcp_open "$host" "$port"
	exit
	;;
promote)
	as "$bin/pg_ctl" -D "$data" -w -t 60 promote >>"$log" 2>&1 || { show_log postgres "$log"; die "pg_ctl promote failed"; }
	exit 0
	;;
standby)
	[[ $primary =~ ^[0-9]+$ ]] || die "standby needs the primary's port"
	;;
start) ;;
*) die "unknown command $cmd" ;;
esac

if [ "$(id -u)" = 0 ]; then
	id postgres >/dev/null 2>&1 || die "no postgres user: run integration/scripts/install-packages.sh first"
	# The postgres user must reach DIR: open the path's directories for traversal only.
	p=$dir
	while [ "$p" != / ]; do
		chmod o+x "$p"
		p=$(dirname "$p")
	done
	chown postgres: "$dir"
	touch "$log" && chown postgres: "$log"
fi
if [ "$cmd" = standby ] && [ ! -f "$data/PG_VERSION" ]; then
	as mkdir -p "$data" "$run"
	chmod 700 "$data"
	as "$bin/pg_basebackup" -h "$host" -p "$primary" -U postgres -D "$data" -R -X stream -c fast >>"$log" 2>&1 ||
		{ show_log postgres "$log"; die "pg_basebackup from $host:$primary failed"; }
	# The copy carries the primary's settings: only the socket directory is this cluster's.
	echo "unix_socket_directories = '$run'" >>"$data/postgresql.conf"
fi
if [ ! -f "$data/PG_VERSION" ]; then
	as mkdir -p "$data" "$run"
	chmod 700 "$data"
	as "$bin/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --locale=C >>"$log" 2>&1 ||
		{ show_log postgres "$log"; die "initdb failed"; }
	cat >>"$data/postgresql.conf" <<CONF
# Written by postgres-instance.sh.
listen_addresses = '$host'
port = $port
unix_socket_directories = '$run'
max_connections = 200
shared_buffers = 256MB
logging_collector = off
log_min_messages = warning
log_line_prefix = '%m [%p] '
CONF
	# Loopback only, no password: a private test cluster.
	printf 'local all all trust\nhost all all 127.0.0.0/8 trust\nhost replication all 127.0.0.0/8 trust\n' >"$data/pg_hba.conf"
fi
as mkdir -p "$run"
if running; then
	tcp_open "$host" "$port" && exit 0
	die "the cluster in $data runs but does not answer on $host:$port"
fi
# -c port=PORT: the port asked for now wins over the one written at initdb.
# 9>&-: the server must not inherit lab-up.sh's lock (lib.sh start_fg_daemon).
# shellcheck disable=SC2086
as "$bin/pg_ctl" -D "$data" -l "$log" -w -t 60 -o "-c port=$port -c listen_addresses=$host ${PG_OPTS:-}" start </dev/null >/dev/null 2>&1 9>&- ||
	{ show_log postgres "$log"; die "pg_ctl start failed"; }
wait_tcp postgres "$host" "$port" "$log" 30 || exit 1
