#!/usr/bin/env bash
# lab-node.sh start NODE...: start what is not running of PEC nodes of the lab (a, b, or an
# extra node such as a2 of PEC_A_NODES=2): the node's pec-milter, pec-lmtpd and Postfix
# instance, from the configuration and binaries lab-up.sh last used, then wait until each
# serves. A node killed by a test comes back this way in seconds; lab-up.sh would redo (and
# re-check) the whole lab. Same PEC_LAB and PEC_LAB_NET as lab-up.sh.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$LAB_SCRIPTS/lab-mail.sh"
. "$LAB_SCRIPTS/lab-topology.sh"

[ "$(id -u)" = 0 ] || die "lab-node.sh must run as root"
[ "${1:-}" = start ] && [ $# -ge 2 ] || die "usage: lab-node.sh start NODE..."
shift
exec 9>"$BASE/.lab.lock"
flock -w 120 9 || die "another lab script holds $BASE/.lab.lock"
secrets_init
fail=0
for id in "$@"; do
	run=$BASE/$id/run
	[ -f "$BASE/$id/pec.yaml" ] && [ -f "$run/pec-milter.bin" ] && [ -f "$run/pec-lmtpd.bin" ] ||
		die "no PEC node $id with pec-milter and pec-lmtpd in $BASE (lab-up.sh, PEC_A_NODES=2 for a2)"
	pec_process_start "$id" pec-milter "$(cat "$run/pec-milter.bin")"
	pec_process_start "$id" pec-lmtpd "$(cat "$run/pec-lmtpd.bin")"
	postfix_start "$id"
done
for id in "$@"; do
	ip=${P_IP[$id]} pflog=$BASE/$id/postfix/maillog
	wait_tcp "postfix-$id MX" "$ip" 25 "$pflog" || fail=1
	wait_tcp "postfix-$id submission" "$ip" 587 "$pflog" || fail=1
	wait_unix "postfix-$id reinjection" "$(reinject_socket "$id")" "" "$pflog" || fail=1
	wait_ready "pec-milter-$id" "http://$ip:9100/readyz" "$BASE/$id/run/pec-milter.pid" "$BASE/$id/logs/pec-milter.log" || fail=1
	wait_ready "pec-lmtpd-$id" "http://$ip:$LMTPD_METRICS_PORT/readyz" "$BASE/$id/run/pec-lmtpd.pid" "$BASE/$id/logs/pec-lmtpd.log" || fail=1
done
[ "$fail" = 0 ] || die "node(s) $* NOT up (see the logs above)"
say "lab: node(s) $* up"
