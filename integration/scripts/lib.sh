# shellcheck shell=bash
# Common helpers for the lab scripts. Source it; it defines functions only.
#
# Conventions every lab script follows (integration/README.md explains why):
#   - daemons never inherit the caller's stdio: </dev/null >>LOG 2>&1, and setsid for the ones
#     that stay in the foreground (a CI pipe would otherwise never close);
#   - every process the lab starts has a PID file or a control command, so lab-down.sh stops
#     exactly what lab-up.sh started and nothing else;
#   - everything binds to 127.0.0.0/8.

LAB_SCRIPTS=${LAB_SCRIPTS:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
LAB_REPO=${LAB_REPO:-$(cd "$LAB_SCRIPTS/../.." && pwd)}

say() { printf '%s\n' "$*" >&2; }
die() { printf 'lab: error: %s\n' "$*" >&2; exit 1; }

# show_log NAME FILE: print the tail of a log after a failure.
show_log() {
	local name=$1 file=$2
	if [ -f "$file" ]; then
		say "---- last lines of $name log ($file) ----"
		tail -n 30 "$file" >&2
		say "----"
	else
		say "($name has no log at $file)"
	fi
}

# pid_running PID: true when the process exists and is not a zombie. A process killed by a
# test stays a zombie until its parent reaps it; the lab's daemons are orphans reaped by PID 1,
# which in a CI container may be a process manager that reaps late, and `kill -0` succeeds on a
# zombie: taken for running, a killed node was never restarted (CI run of 3b5ed90).
pid_running() {
	local st
	kill -0 "$1" 2>/dev/null || return 1
	st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	st=${st##*) }
	[ "${st%% *}" != Z ]
}

# pid_alive PIDFILE: true when the PID file names a running process (pid_running). Postfix
# pads the PID in its master.pid with spaces.
pid_alive() {
	local pid
	[ -s "$1" ] || return 1
	pid=$(head -n1 "$1" 2>/dev/null) || return 1
	pid=${pid//[[:space:]]/}
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	pid_running "$pid"
}

# stop_pidfile NAME PIDFILE: SIGTERM the process, wait up to 10 s, then SIGKILL. Only the PID
# written in the file is signalled.
stop_pidfile() {
	local name=$1 file=$2 pid i
	if ! pid_alive "$file"; then
		rm -f "$file"
		return 0
	fi
	pid=$(head -n1 "$file")
	kill -TERM "$pid" 2>/dev/null || true
	for i in $(seq 1 100); do
		pid_running "$pid" || break
		sleep 0.1
	done
	if pid_running "$pid"; then
		say "lab: $name (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$file"
}

# start_fg_daemon NAME PIDFILE LOG CMD...: start a program that stays in the foreground, in its
# own session, stdio detached, and record its PID.
start_fg_daemon() {
	local name=$1 pidfile=$2 log=$3
	shift 3
	mkdir -p "$(dirname "$log")" "$(dirname "$pidfile")"
	printf '\n==== %s: starting %s ====\n' "$(date -u +%FT%TZ)" "$name" >>"$log"
	setsid "$@" </dev/null >>"$log" 2>&1 9>&- &
	echo $! >"$pidfile"
}

# tcp_open HOST PORT: true when something accepts a TCP connection there.
tcp_open() {
	(exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# wait_tcp NAME HOST PORT LOG [SECONDS]: wait until HOST:PORT accepts, else show LOG and fail.
wait_tcp() {
	local name=$1 host=$2 port=$3 log=$4 secs=${5:-30} i
	for i in $(seq 1 $((secs * 10))); do
		tcp_open "$host" "$port" && return 0
		sleep 0.1
	done
	say "lab: $name did not accept connections on $host:$port within ${secs}s"
	show_log "$name" "$log"
	return 1
}

# wait_unix NAME SOCKET PIDFILE LOG [SECONDS]: wait until a unix socket exists and its process
# is alive.
wait_unix() {
	local name=$1 sock=$2 pidfile=$3 log=$4 secs=${5:-30} i
	for i in $(seq 1 $((secs * 10))); do
		if [ -S "$sock" ]; then return 0; fi
		if [ -n "$pidfile" ] && ! pid_alive "$pidfile"; then break; fi
		sleep 0.1
	done
	say "lab: $name did not create $sock"
	show_log "$name" "$log"
	return 1
}

# wait_ready NAME URL PIDFILE LOG [SECONDS]: wait until URL answers 200 (a PEC process's
# readiness probe: every dependency open, the listener serving) while the process in PIDFILE
# stays alive; a dead process fails at once, with its log.
wait_ready() {
	local name=$1 url=$2 pidfile=$3 log=$4 secs=${5:-30} i
	for i in $(seq 1 $((secs * 10))); do
		if ! pid_alive "$pidfile"; then
			say "lab: $name is not running"
			show_log "$name" "$log"
			return 1
		fi
		curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
		sleep 0.1
	done
	say "lab: $name did not become ready ($url) within ${secs}s"
	show_log "$name" "$log"
	return 1
}

# render TEMPLATE OUT KEY=VALUE...: copy TEMPLATE to OUT replacing each @KEY@ with VALUE.
# Fails when a placeholder is left, so a template and its caller cannot drift apart silently.
render() {
	local tmpl=$1 out=$2 content kv key val left
	shift 2
	content=$(<"$tmpl")
	for kv in "$@"; do
		key=${kv%%=*}
		val=${kv#*=}
		content=${content//@"$key"@/$val}
	done
	left=$(grep -oE '@[A-Z][A-Z0-9_]*@' <<<"$content" | sort -u | tr '\n' ' ' || true)
	[ -z "$left" ] || die "render $tmpl: unsubstituted placeholders: $left"
	printf '%s\n' "$content" >"$out.tmp.$$"
	mv -f "$out.tmp.$$" "$out"
}

# randpw [LEN]: a random alphanumeric password.
randpw() {
	local len=${1:-20} s=""
	while [ ${#s} -lt "$len" ]; do
		s+=$(head -c 64 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
	done
	printf '%s' "${s:0:len}"
}

# randpin: a random numeric PIN (PKCS#11 PINs are often numeric only on real HSMs).
randpin() {
	local s=""
	while [ ${#s} -lt 8 ]; do
		s+=$(head -c 32 /dev/urandom | tr -dc '0-9')
	done
	printf '%s' "${s:0:8}"
}

# ensure_alias IP STATEFILE: add IP/8 to lo unless present; record it in STATEFILE if we added it.
#
# The address list is read whole before grep looks at it: with pipefail, "ip ... | grep -q"
# fails at random when grep exits at the first match and ip dies of SIGPIPE, and the alias
# that is there would then be added again (about 1 lab-up in 7 aborted on that).
ensure_alias() {
	local ip=$1 state=$2 addrs
	addrs=$(ip -4 -o addr show dev lo)
	if grep -qw "inet $ip/[0-9]*" <<<"$addrs"; then
		return 0
	fi
	ip addr add "$ip/8" dev lo || die "cannot add $ip to lo (are you root?)"
	grep -qx "$ip" "$state" 2>/dev/null || echo "$ip" >>"$state"
}

# need CMD...: fail early, with the fix, when a tool is missing.
need() {
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 ||
			die "$c not found: run integration/scripts/install-packages.sh first"
	done
}
