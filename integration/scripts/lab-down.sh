#!/usr/bin/env bash
# lab-down.sh [--purge]: stop everything lab-up.sh started, by PID file or control command
# (never by process name), and remove the loopback aliases lab-up.sh added. The base directory
# ($PEC_LAB, default /tmp/pec-lab) is kept, so the next lab-up.sh is warm and keeps passwords,
# keys and certificates; --purge deletes it too. lab.json is removed: tests fail (never skip)
# while the lab is down.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$LAB_SCRIPTS/lab-mail.sh"
. "$LAB_SCRIPTS/lab-topology.sh"

purge=0
[ "${1:-}" = --purge ] && purge=1
[ "$(id -u)" = 0 ] || die "lab-down.sh must run as root"
[ -d "$BASE" ] || { say "lab: nothing at $BASE"; exit 0; }
exec 9>"$BASE/.lab.lock"
flock -w 120 9 || die "another lab-up/lab-down holds $BASE/.lab.lock"

# Provider C of TestSysadminInstall, if an interrupted run left it (it needs lab.json and slapd).
if [ -d "$BASE/sysadmin-c" ]; then
	"$LAB_SCRIPTS/sysadmin-install.sh" down "$BASE/sysadmin-c" || say "lab: stopping provider C failed"
fi
rm -f "$BASE/lab.json"
for id in "${ALL_IDS[@]}"; do postfix_stop "$id" & done
for id in "${KNOWN_NODES[@]}"; do node_stop "$id" & done
for id in "${PEC_IDS[@]}"; do
	pec_process_stop "$id" pec-milter
	pec_process_stop "$id" pec-lmtpd
done
for id in "${ALL_IDS[@]}"; do dovecot_stop "$id" & done
wait
export SLAPD_HOST=$SVC_IP CLAMD_HOST=$SVC_IP
"$LAB_SCRIPTS/slapd-instance.sh" stop "$BASE/ldap" "$LDAP_PORT"
"$LAB_SCRIPTS/clamd-instance.sh" stop "$BASE/clamav" "$CLAMD_PORT"
tsa_stop
pg_stop

# Postfix's master exits asynchronously after "postfix stop"; wait for its PID file to go.
for id in "${ALL_IDS[@]}" "${KNOWN_NODES[@]}"; do
	for _ in $(seq 1 100); do
		pid_alive "$BASE/$id/postfix/spool/pid/master.pid" || break
		sleep 0.1
	done
	pid_alive "$BASE/$id/postfix/spool/pid/master.pid" && say "lab: postfix-$id master still running"
done

if [ -f "$BASE/aliases-added" ]; then
	while read -r ip; do
		[ -n "$ip" ] && ip addr del "$ip/8" dev lo 2>/dev/null || true
	done <"$BASE/aliases-added"
	rm -f "$BASE/aliases-added"
fi
if [ "$purge" = 1 ]; then
	exec 9>&-
	rm -rf "$BASE"
	say "lab: stopped and removed $BASE"
else
	say "lab: stopped (state kept in $BASE; lab-down.sh --purge removes it)"
fi
