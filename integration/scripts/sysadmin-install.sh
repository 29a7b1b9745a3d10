#!/usr/bin/env bash
# sysadmin-install.sh up DIR IP BINDIR | down DIR
#
# Provider C as a sysadmin installs it (issue 17 item 4): a plain Postfix and a plain Dovecot,
# configured the way a Debian admin does (virtual mailboxes delivered by Dovecot's LMTP,
# submission with SASL from Dovecot, Debian's stock master.cf and /etc/dovecot), then turned
# into a PEC provider by running the shell blocks of postfix-conf/README.md ("Installing, step
# by step", the blocks marked install:NAME) as they stand, in order. Nothing of the lab's
# generator (lab-mail.sh, lab-topology.sh) configures C: only the README.
#
#   up DIR IP BINDIR  DIR: C's root (short: unix sockets), IP: its loopback address (added to
#                     lo when missing), BINDIR: pec-milter, pec-lmtpd and pecctl to install
#                     (the README's "bin/"). Writes DIR/provider.json (integration/lab Provider).
#   down DIR          stop what up started (PID files and control commands only), take C's
#                     record out of the lab's index, remove the lo address if up added it.
#
# What is not the host's own, and so not in the README, is done here as the outside world does
# it: the lab CA (AgID CA1's stand-in) signs the CSR, and the lab's slapd (the index AgID
# publishes) gets the record. systemd is not running here: the install:systemd block is
# replaced by starting each unit of postfix-conf/systemd/ as systemd would (User, Group,
# SupplementaryGroups, EnvironmentFile, RuntimeDirectory, StateDirectory, UMask, ExecStart).
# Needs the lab (PEC_LAB, lab.json): its CA, index, clamd, TSA and the other providers' addresses.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$LAB_SCRIPTS/lab-mail.sh" # postfix_run
. "$LAB_SCRIPTS/sysadmin-site.sh"

README=$LAB_REPO/postfix-conf/README.md
DOMAIN=pec-c.test
NAME="Provider C S.p.A."
USERS="carla ricevute posta-certificata"

[ "$(id -u)" = 0 ] || die "sysadmin-install.sh must run as root"
need jq postconf postfix dovecot doveconf doveadm ldapadd ldapdelete openssl setpriv runuser pkcs11-tool curl
LAB_JSON=${PEC_LAB:-/tmp/pec-lab}/lab.json
# lab.json read once: LABV["ca.cert"], LABV["providers.0.ip"], ...; labv KEY prints one value.
# (down works without it, and then leaves the record, which goes when lab-up restarts slapd
# from its LDIF.)
declare -A LABV=()
if [ -f "$LAB_JSON" ]; then
	while IFS=$'\t' read -r k v; do LABV[$k]=$v; done < <(jq -r 'paths(scalars) as $p |
		[($p | map(tostring) | join(".")), (getpath($p) | tostring)] | @tsv' "$LAB_JSON")
fi
labv() { [ -n "${LABV[$1]:-}" ] || die "lab.json has no $1"; printf '%s' "${LABV[$1]}"; }
T0=$(date +%s.%N)
# elapsed: seconds since the script started, for the step lines.
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%5.1fs", b - a }'; }

# readme_blocks: "NAME<TAB>line" for every line of every install:NAME block of the README.
readme_blocks() {
	awk '/^```sh install:/ {name = substr($2, 9); next} /^```/ {name = ""; next}
	     name != "" {print name "\t" $0}' "$README"
}

# block NAME: the body of one install: block (fails when the README has none by that name).
block() {
	local body
	body=$(readme_blocks | awk -F'\t' -v n="$1" '$1 == n {sub(/^[^\t]*\t/, ""); print}')
	[ -n "$body" ] || die "postfix-conf/README.md has no install:$1 block"
	printf '%s\n' "$body"
}

# check_site: the test's site sets every variable the README's site block names, and only those.
check_site() {
	local v missing=""
	for v in $(block site | sed -n 's/^\([A-Z_][A-Z0-9_]*\)=.*/\1/p'); do
		[ -n "${!v:-}" ] || missing+=" $v"
	done
	[ -z "$missing" ] || die "the README's site block names variables this script does not set:$missing"
}

# run_block NAME: run one README block with bash -euo pipefail from the source tree ($SRC),
# with the site's variables in the environment, and its output in the install log.
run_block() {
	say "sysadmin: $(elapsed) README step install:$1"
	(cd "$SRC" && block "$1" | bash -euo pipefail -s) >>"$LOG" 2>&1 ||
		{ tail -n 40 "$LOG" >&2; die "README step install:$1 failed (log $LOG)"; }
}

up() {
	[ -f "$LAB_JSON" ] || die "no lab at $LAB_JSON: lab-up.sh first"
	DIR=$1 IP=$2
	local bindir=$3 name
	[ ! -e "$DIR" ] || [ -z "$(ls -A "$DIR")" ] || die "$DIR is not empty: sysadmin-install.sh down it and remove it first"
	mkdir -p "$DIR"
	DIR=$(cd "$DIR" && pwd)
	LOG=$DIR/install.log
	: >"$LOG"
	ensure_alias "$IP" "$DIR/aliases-added"
	site_plain
	say "sysadmin: $(elapsed) the plain site is up"
	site_env "$bindir"
	check_site
	for name in $(readme_blocks | cut -f1 | uniq); do
		if declare -F "before_$name" >/dev/null; then "before_$name"; fi
		case $name in
		site) ;;
		systemd) for u in pec-lmtpd pec-milter; do unit_start "$u"; done ;;
		*) run_block "$name" ;;
		esac
		if declare -F "after_$name" >/dev/null; then "after_$name"; fi
	done
	write_provider_json
	say "sysadmin: $(elapsed) provider C ($DOMAIN) is up on $IP; described in $DIR/provider.json"
}

down() {
	DIR=$(cd "$1" && pwd)
	local u ip
	# The record first: A and B drop it at their next index refresh while C stops.
	index_unpublish
	# Then Postfix: its smtpd and lmtp processes hold connections to pec-milter and pec-lmtpd,
	# which on SIGTERM wait for open sessions (shutdown_grace).
	if [ -f "$DIR/postfix/etc/main.cf" ] && postfix_running "$DIR/postfix/etc"; then
		postfix_run "$DIR/postfix/etc" stop || true
	fi
	if [ -f "$DIR/dovecot/etc/dovecot.conf" ] && pid_alive "$DIR/dovecot/run/master.pid"; then
		dovecot -c "$DIR/dovecot/etc/dovecot.conf" stop </dev/null >/dev/null 2>&1 || true
	fi
	for u in pec-milter pec-lmtpd; do stop_pidfile "$u" "$DIR/state/$u.pid" & done
	wait
	for _ in $(seq 1 100); do
		pid_alive "$DIR/postfix/spool/pid/master.pid" || pid_alive "$DIR/dovecot/run/master.pid" || break
		sleep 0.1
	done
	if [ -f "$DIR/aliases-added" ]; then
		while read -r ip; do [ -n "$ip" ] && { ip addr del "$ip/8" dev lo 2>/dev/null || true; }; done <"$DIR/aliases-added"
		rm -f "$DIR/aliases-added"
	fi
	say "sysadmin: $(elapsed) provider C is down"
}

case ${1:-} in
up) [ $# -eq 4 ] || die "usage: sysadmin-install.sh up DIR IP BINDIR"; up "$2" "$3" "$4" ;;
down)
	[ $# -eq 2 ] || die "usage: sysadmin-install.sh down DIR"
	if [ -d "$2" ]; then down "$2"; fi
	;;
*) die "usage: sysadmin-install.sh up DIR IP BINDIR | down DIR" ;;
esac
