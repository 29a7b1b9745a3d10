#!/usr/bin/env bash
# lab-up.sh: start the two-provider PEC lab on loopback (idempotent).
#
#   PEC_LAB=/tmp/pec-lab   base directory (default /tmp/pec-lab; keep it short: unix sockets)
#   PEC_WIRING=plain|pec   plain: Postfix delivers straight to Dovecot, no milter.
#                          pec: submission and MX call bin/pec-milter; delivery goes through
#                          bin/pec-lmtpd when it exists. Default: pec when bin/pec-milter exists.
#   PEC_STORE=sqlite|postgres  postgres: start PostgreSQL (a primary and its synchronous
#                          streaming standby, $PEC_LAB/pg) and keep provider A's store there.
#   PEC_LAB_PPROF=true     serve /debug/pprof/ on the PEC processes' metrics listeners
#   PEC_LAB_DIRECT=false   no reinject.direct_addr: our own notices go through pec-loop too
#                          (issue 19's A/B of the pec-deliver listener)
#                          (metrics.pprof) for profiling under load; default false.
#   PEC_A_NODES=1|2        2: provider A runs a second node a2 on .11 (its own Postfix, pec-milter,
#                          pec-lmtpd) sharing A's PostgreSQL, Dovecot and token (lab-nodes.sh);
#                          needs PEC_STORE=postgres and the pec wiring.
#   PEC_LAB_SIZE_X_RCPTS=30MB  limits.max_size_times_recipients (the P6 benchmark of one
#                          100 MB message needs more; default 30MB).
#   PEC_MILTER_BIN, PEC_LMTPD_BIN, PEC_PECCTL_BIN  other binaries than bin/pec-milter,
#                          bin/pec-lmtpd, bin/pecctl (pecctl serves the lab TSA on :3180; without
#                          it there is no TSA and pec.yaml has no seal: section)
#
# Mail systems (all on lo aliases): A 127.0.0.10 pec-a.test, B 127.0.0.20 pec-b.test (PEC
# providers), O 127.0.0.30 posta.test (ordinary mail). Shared: slapd with the providers index
# on 127.0.0.1:3890, clamd on 127.0.0.1:3310, the RFC 3161 test TSA on 127.0.0.1:3180 (daily
# seal of the legal log), SoftHSM2 tokens provider-a and provider-b.
# Everything is described in $PEC_LAB/lab.json (integration/lab/lab.go), written last.
#
# Running it again keeps passwords, PINs, keys and certificates, regenerates the configuration,
# reloads what changed and starts what is not running: one of each daemon, always. It restarts
# pec-milter / pec-lmtpd when their binary is newer than the running process.
# lab-down.sh stops everything it started.
set -euo pipefail
T0=$(date +%s.%N)
TIMES="" TLAST=$T0
# mark STEP: note how long the step that just ended took (printed in the summary).
mark() {
	local now
	now=$(date +%s.%N)
	TIMES+=$(awk -v n="$1" -v a="$TLAST" -v b="$now" 'BEGIN { printf " %s %.1fs", n, b - a }')
	TLAST=$now
}
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$LAB_SCRIPTS/lab-pki.sh"
. "$LAB_SCRIPTS/lab-mail.sh"
. "$LAB_SCRIPTS/lab-topology.sh"

[ "$(id -u)" = 0 ] || die "lab-up.sh must run as root (Postfix instances, lo aliases)"
need postfix postconf dovecot doveconf slapd clamd softhsm2-util pkcs11-tool openssl jq ip setsid script
id vmail >/dev/null 2>&1 || die "user vmail missing: run integration/scripts/install-packages.sh"

mkdir -p "$BASE" "$BASE/logs"
chmod 755 "$BASE"
exec 9>"$BASE/.lab.lock"
flock -w 120 9 || die "another lab-up/lab-down holds $BASE/.lab.lock"

# ---- wiring --------------------------------------------------------------------------------
MILTER_BIN=${PEC_MILTER_BIN:-$LAB_REPO/bin/pec-milter}
LMTPD_BIN=${PEC_LMTPD_BIN:-$LAB_REPO/bin/pec-lmtpd}
PECCTL_BIN=${PEC_PECCTL_BIN:-$LAB_REPO/bin/pecctl}
if [ -x "$PECCTL_BIN" ]; then USE_TSA=1; else USE_TSA=0; fi
if [ -z "${PEC_WIRING:-}" ]; then
	if [ -x "$MILTER_BIN" ]; then PEC_WIRING=pec; else PEC_WIRING=plain; fi
fi
case $PEC_WIRING in
plain) USE_LMTPD=0 ;;
pec)
	[ -x "$MILTER_BIN" ] || die "PEC_WIRING=pec needs $MILTER_BIN (build it first: go build -o bin/ ./cmd/...)"
	if [ -x "$LMTPD_BIN" ]; then USE_LMTPD=1; else USE_LMTPD=0; fi
	;;
*) die "PEC_WIRING must be plain or pec, not $PEC_WIRING" ;;
esac
if [ ${#NODE_IDS[@]} -gt 0 ]; then
	[ "${PEC_STORE:-sqlite}" = postgres ] || die "PEC_A_NODES=$A_NODES: the nodes share one store, so PEC_STORE=postgres"
	[ "$PEC_WIRING" = pec ] && [ "$USE_LMTPD" = 1 ] || die "PEC_A_NODES=$A_NODES needs the pec wiring with $LMTPD_BIN"
fi
# Every Postfix instance (mail systems, then extra nodes) and every PEC node.
MAIL_IDS=("${ALL_IDS[@]}" "${NODE_IDS[@]}")
PEC_NODES=("${PEC_IDS[@]}" "${NODE_IDS[@]}")

# ---- secrets: generated once, kept across re-runs --------------------------------------------
secrets_init
for id in "${ALL_IDS[@]}"; do
	for u in ${P_USERS[$id]}; do secret_ensure "$(user_secret "$id" "$u")" pw; done
done
for id in "${PEC_IDS[@]}"; do
	secret_ensure "PIN_$id" pin
	secret_ensure "SOPIN_$id" pin
done
for id in "${ALL_IDS[@]}"; do secret_ensure "DOVEADM_KEY_$id" pw; done
secret_ensure LDAP_PW pw

mark secrets
# ---- loopback aliases --------------------------------------------------------------------------
for id in "${MAIL_IDS[@]}"; do ensure_alias "${P_IP[$id]}" "$BASE/aliases-added"; done
[ "$SVC_IP" = 127.0.0.1 ] || ensure_alias "$SVC_IP" "$BASE/aliases-added"
export SLAPD_HOST=$SVC_IP CLAMD_HOST=$SVC_IP

mark aliases
# ---- PKI: CA, tokens, certificates, index ----------------------------------------------------
pki_ca "$BASE/ca"
for id in "${PEC_IDS[@]}"; do
	pki_provider "$id" "${P_NAME[$id]}" "${P_SERVICE[$id]}" "provider-$id" "$(secret "PIN_$id")" "${P_KEYID[$id]}"
	for x in ${P_EXTRA[$id]}; do
		pki_provider "$id" "${P_NAME[$id]}" "posta-certificata@$x" "provider-$id" "$(secret "PIN_$id")" \
			"${P_EXTRA_KEYID[$x]}" "provider-${x%%.*}" "$(extra_dir "$id" "$x")"
	done
done
export SOFTHSM2_CONF=$BASE/softhsm/softhsm2.conf
revoked=()
for id in "${SIGNER_IDS[@]}"; do
	pki_signer "$id"
	[ "${SIGNER_REVOKED[$id]}" = true ] && revoked+=("$BASE/signers/$id/cert.pem")
done
pki_crl "${revoked[@]}"
listed=()
for id in "${SIGNER_IDS[@]}"; do [ "${SIGNER_LISTED[$id]}" = true ] && listed+=("$id"); done
mkdir -p "$BASE/ldap"
pki_ldif "$BASE/ldap/providers.ldif" "${PEC_IDS[@]}" "${listed[@]}"

mark pki
# ---- slapd and clamd -----------------------------------------------------------------------------
SLAPD_ROOTPW=$(secret LDAP_PW) "$LAB_SCRIPTS/slapd-instance.sh" start "$BASE/ldap" "$LDAP_PORT" "$BASE/ldap/providers.ldif"
"$LAB_SCRIPTS/clamd-instance.sh" start "$BASE/clamav" "$CLAMD_PORT" &
CLAMD_JOB=$!

mark slapd
# ---- the TSA (before pec.yaml: its seal: section names the TSA's CA file) -------------------
if [ "$USE_TSA" = 1 ]; then tsa_start "$PECCTL_BIN"; else tsa_stop; fi
# ---- per mail system: Dovecot, pec.yaml, PEC processes, Postfix ----------------------------
for id in "${ALL_IDS[@]}"; do
	mail_tls "$id"
	dovecot_configure "$id"
	dovecot_start "$id"
done
for id in "${NODE_IDS[@]}"; do mail_tls "$id"; done
mark dovecot
case ${PEC_STORE:-sqlite} in
postgres) need psql && pg_start ;;
sqlite) ;;
*) die "PEC_STORE must be sqlite or postgres, not $PEC_STORE" ;;
esac
for id in "${PEC_NODES[@]}"; do write_pec_yaml "$id"; done
nodes_stop_unused

declare -A PF_JOBS=()
for id in "${MAIL_IDS[@]}"; do
	mkdir -p "$BASE/$id/postfix"
	ip=${P_IP[$id]}
	milter="" delivery="lmtp:unix:$BASE/$id/dovecot/run/lmtp"
	if [ "$PEC_WIRING" = pec ] && is_pec "$id"; then
		milter="unix:$BASE/$id/run/milter.sock"
		[ "$USE_LMTPD" = 1 ] && delivery="lmtp:unix:$BASE/$id/run/lmtp.sock"
	fi
	P_DELIVERY[$id]=$delivery
	# The instances are independent; configure them in parallel (postfix check is slow).
	postfix_configure "$id" "$delivery" "$milter" >"$BASE/$id/postfix-config.log" 2>&1 &
	PF_JOBS[$id]=$!
done
for id in "${MAIL_IDS[@]}"; do
	wait "${PF_JOBS[$id]}" || { cat "$BASE/$id/postfix-config.log" >&2; die "configuring postfix-$id failed"; }
done

mark postfix-config
for id in "${PEC_NODES[@]}"; do
	if [ "$PEC_WIRING" = pec ]; then
		pec_process_start "$id" pec-milter "$MILTER_BIN"
		if [ "$USE_LMTPD" = 1 ]; then pec_process_start "$id" pec-lmtpd "$LMTPD_BIN"; else pec_process_stop "$id" pec-lmtpd; fi
	else
		pec_process_stop "$id" pec-milter
		pec_process_stop "$id" pec-lmtpd
	fi
done
for id in "${MAIL_IDS[@]}"; do postfix_start "$id" & PF_JOBS[$id]=$!; done
for id in "${MAIL_IDS[@]}"; do wait "${PF_JOBS[$id]}" || die "postfix-$id did not start"; done

mark start
# ---- wait for every listener -------------------------------------------------------------------
wait "$CLAMD_JOB" || die "clamd did not start"
fail=0
wait_tcp slapd "$SVC_IP" "$LDAP_PORT" "$BASE/ldap/slapd.log" || fail=1
[ "$USE_TSA" = 1 ] && { wait_tcp tsa "$SVC_IP" "$TSA_PORT" "$BASE/tsa/tsa.log" || fail=1; }
for id in "${MAIL_IDS[@]}"; do
	ip=${P_IP[$id]} pflog=$BASE/$id/postfix/maillog dlog=$BASE/$(prov "$id")/dovecot/dovecot.log
	wait_tcp "postfix-$id MX" "$ip" 25 "$pflog" || fail=1
	wait_tcp "postfix-$id submission" "$ip" 587 "$pflog" || fail=1
	is_pec "$id" && { wait_unix "postfix-$id reinjection" "$(reinject_socket "$id")" "" "$pflog" || fail=1; }
	[ "$PEC_WIRING" = pec ] && is_pec "$id" && { wait_tcp "postfix-$id same-provider listener" "$ip" 10027 "$pflog" || fail=1; }
	if [ "$(prov "$id")" = "$id" ]; then # an extra node uses its provider's Dovecot
		wait_tcp "dovecot-$id IMAP" "$ip" 143 "$dlog" || fail=1
		wait_unix "dovecot-$id LMTP" "$BASE/$id/dovecot/run/lmtp" "$BASE/$id/dovecot/run/master.pid" "$dlog" || fail=1
		wait_tcp "dovecot-$id doveadm" "$ip" "$DOVEADM_PORT" "$dlog" || fail=1
		wait_unix "dovecot-$id auth" "$BASE/$id/dovecot/run/auth-postfix" "$BASE/$id/dovecot/run/master.pid" "$dlog" || fail=1
	fi
	if [ "$PEC_WIRING" = pec ] && is_pec "$id"; then
		wait_ready "pec-milter-$id" "http://$ip:9100/readyz" "$BASE/$id/run/pec-milter.pid" "$BASE/$id/logs/pec-milter.log" || fail=1
		[ "$USE_LMTPD" = 1 ] && { wait_ready "pec-lmtpd-$id" "http://$ip:$LMTPD_METRICS_PORT/readyz" "$BASE/$id/run/pec-lmtpd.pid" "$BASE/$id/logs/pec-lmtpd.log" || fail=1; }
	fi
done
[ "$fail" = 0 ] || die "the lab is NOT up (see the logs above); lab-down.sh stops what did start"

mark wait
write_lab_json
mark lab.json
print_summary "$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')"
