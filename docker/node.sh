#!/usr/bin/env bash
# node.sh ROLE: one node of the containerised two-provider PEC network (docker/compose.yaml).
# It is the lab (integration/scripts/lab-up.sh) cut along its natural seams: it sources the
# lab's own generators, so every container renders postfix-conf/ and pec.yaml exactly as the
# lab does, with service names in place of the lab's loopback aliases.
#
#   setup      one-shot: secrets, the lab CA, each provider's SoftHSM2 token with its key
#              generated on it and its certificate, the providers-index LDIF, the TSA's
#              authority. Idempotent (a second run keeps everything). Marks each volume done.
#   mail ID    mail system ID (a, b: PEC providers; o: ordinary mail): Dovecot, Postfix and, for
#              a PEC provider, pec-milter, (when the image has it) pec-lmtpd, and the lab's test
#              TSA on the container's own loopback (pecctl serves that test authority on
#              127.0.0.0/8 only; setup made it once, each provider serves a copy for its seal)
#   index      slapd with the providers index          clamd    clamd with the test signatures
#   health     the healthcheck of this node
#
# Every long-running role starts its daemons with the lab's functions, follows their logs on
# stdout, stops them in order on SIGTERM, and exits 1 (with the log's tail) if one of them dies.
#
# Environment: PEC_LAB (/lab: the volumes are mounted under it as the lab's directories),
# PEC_WIRING (pec|plain, default pec), PEC_HOST_A/B/O, PEC_INDEX_HOST, PEC_CLAMD_HOST (service
# names; defaults are the compose.yaml names), PEC_SETUP_WAIT (seconds a node waits for setup,
# default 600).
set -euo pipefail
export PEC_LAB=${PEC_LAB:-/lab}
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../integration/scripts/lib.sh"
. "$LAB_SCRIPTS/lab-topology.sh"
. "$LAB_SCRIPTS/lab-pki.sh"
. "$LAB_SCRIPTS/lab-mail.sh"

BIN=$LAB_REPO/bin
ROLE_FILE=/run/pec-node
declare -A HOST=([a]=${PEC_HOST_A:-provider-a} [b]=${PEC_HOST_B:-provider-b} [o]=${PEC_HOST_O:-mail-o})
LAB_LDAP_HOST=${PEC_INDEX_HOST:-index} LAB_CLAMD_HOST=${PEC_CLAMD_HOST:-clamd} LAB_TSA_HOST=127.0.0.1
# The authority setup made (the tsa volume, mounted read-only in the providers at TSA_SOURCE).
TSA_SOURCE=/lab/tsa-authority
USE_TSA=1
TAIL_PID=""

# own_ip: the container's address on the compose network (what Postfix and Dovecot bind).
own_ip() {
	local ip
	ip=$(ip -4 -o addr show scope global | awk '{ split($4, a, "/"); print a[1]; exit }')
	[ -n "$ip" ] || die "no global IPv4 address on this container"
	printf '%s' "$ip"
}

# load_secrets FILE...: the lab's secrets, one file per node instead of one secrets.env.
load_secrets() {
	local f k v
	for f in "$@"; do
		[ -f "$f" ] || continue
		while IFS='=' read -r k v; do [ -n "$k" ] && SECRET_MAP[$k]=$v; done <"$f"
	done
}

# wait_setup DIR: wait until setup has marked DIR (a volume) done.
wait_setup() {
	local i secs=${PEC_SETUP_WAIT:-600}
	for i in $(seq 1 "$secs"); do
		[ -f "$1/.setup-done" ] && return 0
		[ "$i" = 1 ] && say "node: waiting for setup to fill $1"
		sleep 1
	done
	die "setup did not finish within ${secs}s (see the setup container's log)"
}

# pidfile_alive FILE: like pid_alive, for PID files padded with spaces (Postfix's master.pid);
# a zombie (dead, not yet reaped) is not alive.
pidfile_alive() {
	local pid st
	pid=$(tr -d ' \n' <"$1" 2>/dev/null) || return 1
	[[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
	st=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
	st=${st##*) }
	[ "${st%% *}" != Z ]
}

# supervise NAME=PIDFILE...: return 1 as soon as one of them is gone.
supervise() {
	local e
	while :; do
		for e in "$@"; do
			pidfile_alive "${e#*=}" || { say "node: ${e%%=*} is not running"; return 1; }
		done
		sleep 2 &
		wait $! || true
	done
}

# follow LOG...: the daemons' logs on the container's stdout (podman logs, docker logs).
follow() {
	touch "$@"
	tail -n +1 -q -F "$@" 2>/dev/null &
	TAIL_PID=$!
}

# on_term STOP_FN: from now on SIGTERM (docker stop, compose down) runs STOP_FN and exits 0, also
# while the node is still starting.
on_term() {
	# shellcheck disable=SC2064 # the function's name is fixed now
	trap "$1; [ -z \"\$TAIL_PID\" ] || kill \"\$TAIL_PID\" 2>/dev/null; exit 0" TERM INT
}

# run_node STOP_FN NAME=PIDFILE...: supervise until SIGTERM (STOP_FN, exit 0) or a death
# (STOP_FN, exit 1).
run_node() {
	local stop=$1
	shift
	on_term "$stop"
	say "node: $(cat "$ROLE_FILE") is up"
	supervise "$@" || {
		trap - TERM INT
		"$stop"
		[ -z "$TAIL_PID" ] || kill "$TAIL_PID" 2>/dev/null
		exit 1
	}
}

# ---- setup ------------------------------------------------------------------------------------
setup() {
	local id u x
	for id in "${ALL_IDS[@]}"; do load_secrets "$BASE/$id/secrets.env"; done
	load_secrets "$BASE/ldap/secrets.env"
	for id in "${ALL_IDS[@]}"; do
		SECRETS=$BASE/$id/secrets.env
		(umask 077 && touch "$SECRETS")
		for u in ${P_USERS[$id]}; do secret_ensure "$(user_secret "$id" "$u")" pw; done
		secret_ensure "DOVEADM_KEY_$id" pw
		is_pec "$id" || continue
		secret_ensure "PIN_$id" pin
		secret_ensure "SOPIN_$id" pin
	done
	SECRETS=$BASE/ldap/secrets.env
	(umask 077 && touch "$SECRETS")
	secret_ensure LDAP_PW pw

	pki_ca "$BASE/ca"
	for id in "${PEC_IDS[@]}"; do
		# One SoftHSM2 installation per provider, in its own volume: a provider sees its token only.
		HSM_DIR=$BASE/$id/softhsm
		pki_provider "$id" "${P_NAME[$id]}" "${P_SERVICE[$id]}" "provider-$id" "$(secret "PIN_$id")" "${P_KEYID[$id]}"
		for x in ${P_EXTRA[$id]}; do
			pki_provider "$id" "${P_NAME[$id]}" "posta-certificata@$x" "provider-$id" "$(secret "PIN_$id")" \
				"${P_EXTRA_KEYID[$x]}" "provider-${x%%.*}" "$(extra_dir "$id" "$x")"
		done
	done
	# CA1's CRL (pec.yaml trust.crls). The lab's extra test signers (a forger, a revoked
	# provider) are test fixtures of the integration tests and are not made here: nothing is
	# revoked, the index lists the two providers.
	pki_crl
	mkdir -p "$BASE/ldap"
	pki_ldif "$BASE/ldap/providers.ldif" "${PEC_IDS[@]}"
	mkdir -p "$BASE/tsa"
	"$BIN/pecctl" tsa init -dir "$BASE/tsa" >>"$BASE/tsa/tsa.log" 2>&1 || { show_log tsa "$BASE/tsa/tsa.log"; die "pecctl tsa init failed"; }
	for x in "${ALL_IDS[@]}" ldap tsa; do date -u +%FT%TZ >"$BASE/$x/.setup-done"; done
	say "node: setup done (CA, tokens and certificates of ${PEC_IDS[*]}, index LDIF, TSA)"
}

# ---- mail systems -----------------------------------------------------------------------------
mail_node() {
	local id=$1 ip x delivery milter fail=0 watch=() logs=()
	[ -n "${P_DOMAIN[$id]:-}" ] || die "unknown mail system $id (one of ${ALL_IDS[*]})"
	MAIL_ID=$id
	on_term mail_stop
	wait_setup "$BASE/$id"
	# A new container runs nothing yet: PID files in the volume belong to the previous one.
	find "$BASE/$id" -name '*.pid' -delete
	ip=$(own_ip)
	for x in "${ALL_IDS[@]}"; do P_IP[$x]=${HOST[$x]}; done
	P_IP[$id]=$ip
	load_secrets "$BASE/$id/secrets.env"
	PEC_WIRING=${PEC_WIRING:-pec}
	HSM_DIR=$BASE/$id/softhsm
	export SOFTHSM2_CONF=$HSM_DIR/softhsm2.conf
	# Dovecot's LMTP is a unix socket only (postfix-conf/dovecot-pec.conf); pec-lmtpd's too.
	milter="" delivery="lmtp:unix:$BASE/$id/dovecot/run/lmtp" USE_LMTPD=0
	if [ "$PEC_WIRING" = pec ] && is_pec "$id"; then
		# pec-milter opens the index and sends to clamd and the TSA: wait for them first.
		wait_tcp index "$LAB_LDAP_HOST" "$LDAP_PORT" /dev/null 300
		wait_tcp clamd "$LAB_CLAMD_HOST" "$CLAMD_PORT" /dev/null 300
		tsa_local
		watch+=("tsa=$BASE/tsa/tsa.pid")
		milter="unix:$BASE/$id/run/milter.sock"
		[ -x "$BIN/pec-lmtpd" ] && USE_LMTPD=1 && delivery="lmtp:unix:$BASE/$id/run/lmtp.sock"
	fi
	P_DELIVERY[$id]=$delivery
	mkdir -p "$BASE/$id/postfix" "$BASE/$id/logs"
	mail_tls "$id"
	dovecot_configure "$id"
	dovecot_start "$id"
	is_pec "$id" && write_pec_yaml "$id"
	postfix_configure "$id" "$delivery" "$milter" || die "configuring postfix-$id failed"
	if [ -n "$milter" ]; then
		pec_process_start "$id" pec-milter "$BIN/pec-milter"
		watch+=("pec-milter=$BASE/$id/run/pec-milter.pid")
		if [ "$USE_LMTPD" = 1 ]; then
			pec_process_start "$id" pec-lmtpd "$BIN/pec-lmtpd"
			watch+=("pec-lmtpd=$BASE/$id/run/pec-lmtpd.pid")
		fi
	fi
	postfix_start "$id"
	logs=("$BASE/$id/postfix/maillog" "$BASE/$id/dovecot/dovecot.log")
	for x in pec-milter pec-lmtpd; do [ -f "$BASE/$id/run/$x.pid" ] && logs+=("$BASE/$id/logs/$x.log"); done
	[ -f "$BASE/tsa/tsa.pid" ] && logs+=("$BASE/tsa/tsa.log")
	follow "${logs[@]}"
	mail_ready "$id" "$ip" /dev/null 60 || fail=1
	echo "mail $id $ip $PEC_WIRING $USE_LMTPD" >"$ROLE_FILE"
	[ "$fail" = 0 ] || { mail_stop; die "mail system $id did not come up"; }
	run_node mail_stop "postfix=$BASE/$id/postfix/spool/pid/master.pid" \
		"dovecot=$BASE/$id/dovecot/run/master.pid" "${watch[@]}"
}

# mail_ready ID IP [_ SECS]: every listener of mail system ID answers (lab-up's checks).
mail_ready() {
	local id=$1 ip=$2 secs=${4:-5} pflog=$BASE/$1/postfix/maillog dlog=$BASE/$1/dovecot/dovecot.log
	wait_tcp "postfix-$id MX" "$ip" 25 "$pflog" "$secs" &&
		wait_tcp "postfix-$id submission" "$ip" 587 "$pflog" "$secs" &&
		wait_tcp "dovecot-$id IMAP" "$ip" 143 "$dlog" "$secs" &&
		wait_unix "dovecot-$id LMTP" "$BASE/$id/dovecot/run/lmtp" "$BASE/$id/dovecot/run/master.pid" "$dlog" "$secs" &&
		wait_tcp "dovecot-$id doveadm" "$ip" "$DOVEADM_PORT" "$dlog" "$secs" &&
		wait_unix "dovecot-$id auth" "$BASE/$id/dovecot/run/auth-postfix" "$BASE/$id/dovecot/run/master.pid" "$dlog" "$secs" || return 1
	is_pec "$id" || return 0
	wait_unix "postfix-$id reinjection" "$(reinject_socket "$id")" "" "$pflog" "$secs" || return 1
	[ -f "$BASE/$id/run/pec-milter.pid" ] || return 0
	wait_tcp "postfix-$id same-provider listener" "$ip" 10027 "$pflog" "$secs" &&
		wait_ready "pec-milter-$id" "http://$ip:9100/readyz" "$BASE/$id/run/pec-milter.pid" "$BASE/$id/logs/pec-milter.log" "$secs" || return 1
	[ -f "$BASE/$id/run/pec-lmtpd.pid" ] || return 0
	wait_ready "pec-lmtpd-$id" "http://$ip:$LMTPD_METRICS_PORT/readyz" "$BASE/$id/run/pec-lmtpd.pid" "$BASE/$id/logs/pec-lmtpd.log" "$secs"
}

mail_stop() {
	local id=${MAIL_ID:-}
	[ -n "$id" ] || return 0
	say "node: stopping mail system $id"
	postfix_stop "$id"
	pec_process_stop "$id" pec-milter
	pec_process_stop "$id" pec-lmtpd
	tsa_stop
	dovecot_stop "$id"
}

# tsa_local: the lab's test TSA on this container's loopback, serving a copy of the authority
# setup made (pec.yaml's seal: tsa_url and tsa_ca point at it, as in the lab).
tsa_local() {
	[ -f "$TSA_SOURCE/tsa-ca.pem" ] || die "no TSA authority in $TSA_SOURCE (setup makes it)"
	rm -rf "$BASE/tsa"
	mkdir -p "$BASE/tsa"
	find "$TSA_SOURCE" -maxdepth 1 -type f ! -name 'tsa.pid' ! -name 'tsa.log' ! -name 'tsa.bin' \
		-exec cp -p {} "$BASE/tsa/" \;
	tsa_start "$BIN/pecctl"
	wait_tcp tsa "$LAB_TSA_HOST" "$TSA_PORT" "$BASE/tsa/tsa.log" 30
}

# ---- shared services ----------------------------------------------------------------------------
index_node() {
	local ip
	wait_setup "$BASE/ldap"
	find "$BASE/ldap" -name '*.pid' -delete
	ip=$(own_ip)
	load_secrets "$BASE/ldap/secrets.env"
	SLAPD_HOST=$ip SLAPD_ROOTPW=$(secret LDAP_PW) "$LAB_SCRIPTS/slapd-instance.sh" start "$BASE/ldap" "$LDAP_PORT" "$BASE/ldap/providers.ldif"
	echo "index - $ip" >"$ROLE_FILE"
	follow "$BASE/ldap/slapd.log"
	run_node index_stop "slapd=$BASE/ldap/slapd.pid"
}
index_stop() { SLAPD_HOST=$(own_ip) "$LAB_SCRIPTS/slapd-instance.sh" stop "$BASE/ldap" "$LDAP_PORT"; }

clamd_node() {
	local ip
	ip=$(own_ip)
	CLAMD_HOST=$ip "$LAB_SCRIPTS/clamd-instance.sh" start "$BASE/clamav" "$CLAMD_PORT"
	echo "clamd - $ip" >"$ROLE_FILE"
	follow "$BASE/clamav/clamd.log"
	run_node clamd_stop "clamd=$BASE/clamav/clamd.pid"
}
clamd_stop() { CLAMD_HOST=$(own_ip) "$LAB_SCRIPTS/clamd-instance.sh" stop "$BASE/clamav" "$CLAMD_PORT"; }

# ---- healthcheck (compose.yaml; `podman healthcheck run`) -----------------------------------------
health() {
	local role id ip
	read -r role id ip _ <"$ROLE_FILE" 2>/dev/null || { say "node: not started yet"; return 1; }
	case $role in
	mail) mail_ready "$id" "$ip" ;;
	index) tcp_open "$ip" "$LDAP_PORT" ;;
	clamd) [ "$(clamd_ping "$ip")" = PONG ] ;;
	*) return 1 ;;
	esac
}

clamd_ping() {
	local reply
	exec 3<>"/dev/tcp/$1/$CLAMD_PORT" || return 1
	printf 'zPING\0' >&3
	IFS= read -r -d '' -t 5 reply <&3 || true
	exec 3<&-
	printf '%s' "$reply"
}

case ${1:-help} in
setup) setup ;;
mail) mail_node "${2:?usage: node.sh mail a|b|o}" ;;
index) index_node ;;
clamd) clamd_node ;;
health) health ;;
help | *) sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
esac
