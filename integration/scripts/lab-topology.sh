# shellcheck shell=bash
# The lab's topology and secrets, its pec.yaml files, the PEC processes and lab.json.
# Sourced by lab-up.sh and lab-down.sh. Every address and name of the lab is defined here once.

BASE=${PEC_LAB:-/tmp/pec-lab}
# unix socket paths (Dovecot's auth socket, the milter socket) are limited to 108 bytes.
[ ${#BASE} -le 60 ] || die "PEC_LAB=$BASE is too long for unix socket paths; use a short path such as /tmp/pec-lab"
mkdir -p "$BASE"
BASE=$(cd "$BASE" && pwd)
SOFTHSM_MODULE=${SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
LDAP_PORT=3890
CLAMD_PORT=3310
LMTPD_METRICS_PORT=9101
DOVEADM_PORT=8080
TSA_PORT=3180
# How often A and B reload the providers index (index.refresh; production: 1h, at most 24h).
# Short, so that a provider published while the lab runs (TestSysadminInstall publishes provider
# C, as AgID would) is trusted within seconds, and forgotten as soon as its record is removed.
INDEX_REFRESH=5s
# PostgreSQL (issue 18): a primary and its synchronous streaming standby on the service
# address, started by lab-up.sh when PEC_STORE=postgres; provider A then keeps its store in
# the database pec_a, the DSN naming both (a promoted standby needs no change).
PG_PORT=5439
PG_STANDBY_PORT=5440
# PEC_LAB_NET moves the whole lab to another 127.x.y.0/24 (A .10, B .20, O .30, slapd and
# clamd .1), so a second lab (another PEC_LAB) can run next to the shared one, e.g. to measure
# a cold start: PEC_LAB=/tmp/pec-lab2 PEC_LAB_NET=127.0.1 lab-up.sh
NET=${PEC_LAB_NET:-127.0.0}
[[ $NET =~ ^127\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || die "PEC_LAB_NET must look like 127.X.Y, not $NET"
SVC_IP=$NET.1
# Where the PEC processes reach the shared services, and the SoftHSM2 installation of the tokens.
# The lab keeps them all on SVC_IP and in one $BASE/softhsm; the containers (docker/node.sh)
# reassign them after sourcing this file: service names, and one token directory per provider.
LAB_LDAP_HOST=$SVC_IP LAB_CLAMD_HOST=$SVC_IP LAB_TSA_HOST=$SVC_IP
HSM_DIR=$BASE/softhsm

ALL_IDS=(a b o)
PEC_IDS=(a b)
declare -A P_NAME=([a]="Provider A S.p.A." [b]="Provider B S.p.A." [o]="Posta Test (ordinary mail)")
declare -A P_IP=([a]=$NET.10 [b]=$NET.20 [o]=$NET.30)
declare -A P_DOMAIN=([a]=pec-a.test [b]=pec-b.test [o]=posta.test)
# A user without a domain is in the provider's P_DOMAIN; one with @ is in an extra PEC domain.
# ordinario@posta-a.test is an ordinary (non-PEC) mailbox on A's Dovecot: the access point must
# not certify it (issue 12 item 1).
declare -A P_USERS=([a]="alice anna ricevute posta-certificata piena arturo@pec-a2.test posta-certificata@pec-a2.test ordinario@posta-a.test" [b]="bruno bianca ricevute posta-certificata piena" [o]="oscar olga")
# Dovecot storage quotas (userdb_quota_rule) by local part: "piena" can never store a PEC
# message, so a delivery to it is refused with 552 5.2.2 "mailbox full" (the delivery point
# answers with the avviso di mancata consegna, errore altro). PEC_LAB_QUOTA="user@domain=1M ..."
# adds or overrides per address.
declare -A P_QUOTA=([piena]=1K)
# Extra PEC domains of a provider, each with its own key on the provider's token, certificate
# and service address (identity per domain: cmd/internal/config Identities).
declare -A P_EXTRA=([a]="pec-a2.test" [b]="" [o]="")
declare -A P_EXTRA_KEYID=([pec-a2.test]=0c)
declare -A P_SERVICE=([a]=posta-certificata@pec-a.test [b]=posta-certificata@pec-b.test [o]="")
declare -A P_RECEIPT=([a]=ricevute@pec-a.test [b]=ricevute@pec-b.test [o]="")
declare -A P_KEYID=([a]=0a [b]=0b)
# Extra test signers (software keys, certificates from CA1; integration/README.md): f forges
# provider A (A's name and service address, not in the index), r is Provider R, listed in the
# index and revoked by CA1's CRL. Their messages must become anomalies at the reception point.
SIGNER_IDS=(f r)
P_NAME[f]="Provider A S.p.A." P_SERVICE[f]=posta-certificata@pec-a.test P_DOMAIN[f]=pec-a.test P_RECEIPT[f]=""
P_NAME[r]="Provider R S.p.A." P_SERVICE[r]=posta-certificata@pec-r.test P_DOMAIN[r]=pec-r.test P_RECEIPT[r]=olga@posta.test
P_EXTRA[f]="" P_EXTRA[r]=""
declare -A SIGNER_LISTED=([f]=false [r]=true) SIGNER_REVOKED=([f]=false [r]=true)
declare -A P_DELIVERY=()
# Extra nodes of provider A (PEC_A_NODES): NODE_IDS, prov, nodes_of, mx_routes.
. "$LAB_SCRIPTS/lab-nodes.sh"

is_pec() { [ "$1" != o ]; }

# user_addr ID USER: the address of a P_USERS entry.
user_addr() { if [[ $2 == *@* ]]; then printf '%s' "$2"; else printf '%s@%s' "$2" "${P_DOMAIN[$1]}"; fi; }
# user_secret ID USER: the name of its password in secrets.env.
user_secret() { local u=${2//[-@.]/_}; printf 'PW_%s_%s' "$1" "$u"; }
# extra_dir DOMAIN: where the key's certificate of an extra domain lives.
extra_dir() { printf '%s/%s/%s' "$BASE" "$1" "$2"; }
# reinject_socket ID: Postfix's pec-reinject service (postfix-conf/master.cf.pec), a unix
# socket in the instance's public/ directory: reinject.addr of pec.yaml.
reinject_socket() { printf '%s/%s/postfix/spool/public/pec-reinject' "$BASE" "$1"; }
# deliver_socket ID: the pec-deliver service, the same listener without the pec-loop filter
# (reinject.direct_addr): the notices the sender's provider sends its own user.
deliver_socket() { printf '%s/%s/postfix/spool/public/pec-deliver' "$BASE" "$1"; }
# all_domains ID: the provider's PEC domains, main first.
all_domains() { printf '%s' "${P_DOMAIN[$1]}${P_EXTRA[$1]:+ ${P_EXTRA[$1]}}"; }

# ---- secrets ($BASE/secrets.env, mode 0600, KEY=value, kept across runs) ---------------------
declare -A SECRET_MAP=()
secrets_init() {
	local k v
	SECRETS=$BASE/secrets.env
	(umask 077 && touch "$SECRETS")
	while IFS='=' read -r k v; do
		[ -n "$k" ] && SECRET_MAP[$k]=$v
	done <"$SECRETS"
}
secret() {
	[ -n "${SECRET_MAP[$1]:-}" ] || die "secret $1 missing from $BASE/secrets.env"
	printf '%s' "${SECRET_MAP[$1]}"
}
secret_ensure() {
	[ -n "${SECRET_MAP[$1]:-}" ] && return 0
	case $2 in
	pin) SECRET_MAP[$1]=$(randpin) ;;
	*) SECRET_MAP[$1]=$(randpw 20) ;;
	esac
	echo "$1=${SECRET_MAP[$1]}" >>"$SECRETS"
}

# signer_keys ID: the signer.keys entries of the extra domains (one key per PEC domain).
signer_keys() {
	local id=$1 x
	[ -n "${P_EXTRA[$id]}" ] || return 0
	printf '  keys:\n'
	for x in ${P_EXTRA[$id]}; do
		printf '    - {domain: %s, service_address: posta-certificata@%s, pkcs11: {key: provider-%s}, certificate: %s/cert-chain.pem}\n' \
			"$x" "$x" "${x%%.*}" "$(extra_dir "$id" "$x")"
	done
}

# ---- PostgreSQL -------------------------------------------------------------------------------
pg_dsn() {
	echo "postgres://postgres@$SVC_IP:$PG_PORT,$SVC_IP:$PG_STANDBY_PORT/pec_$1?sslmode=disable&connect_timeout=5"
}

# store_yaml ID: the store: line of ID's pec.yaml.
store_yaml() {
	if [ "${PEC_STORE:-sqlite}" = postgres ] && [ "$1" = a ]; then
		echo "store: {driver: postgres, dsn: \"$(pg_dsn "$1")\"}"
	else
		echo "store: {driver: sqlite, dsn: $BASE/$1/pec.db}"
	fi
}

# pg_start: the primary (database pec_a), then its standby, then synchronous replication:
# a commit returns once the standby has it, so a failover loses no accepted message.
pg_start() {
	local psql=(psql -h "$SVC_IP" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -tAq)
	PG_HOST=$SVC_IP "$LAB_SCRIPTS/postgres-instance.sh" start "$BASE/pg/primary" "$PG_PORT"
	[ "$("${psql[@]}" -c "SELECT count(*) FROM pg_database WHERE datname = 'pec_a'")" = 1 ] ||
		"${psql[@]}" -c "CREATE DATABASE pec_a"
	PG_HOST=$SVC_IP "$LAB_SCRIPTS/postgres-instance.sh" standby "$BASE/pg/standby" "$PG_STANDBY_PORT" "$PG_PORT"
	"${psql[@]}" -c "ALTER SYSTEM SET synchronous_standby_names = '*'" -c "SELECT pg_reload_conf()" >/dev/null
}

pg_stop() {
	local d
	for d in standby primary; do
		[ -d "$BASE/pg/$d" ] && PG_HOST=$SVC_IP "$LAB_SCRIPTS/postgres-instance.sh" stop "$BASE/pg/$d" 0
	done
	return 0
}

# ---- pec.yaml: the shape all PEC processes read (brief "Per-provider YAML config") -----------
# ID is a provider or one of its extra nodes (lab-nodes.sh): what belongs to the provider (names,
# token, certificate, store, Dovecot, seal) comes from P=prov ID, what belongs to the node
# (sockets, Postfix, listen addresses, node name) from ID.
write_pec_yaml() {
	local id=$1 up p
	p=$(prov "$id")
	up=$(tr 'a-z' 'A-Z' <<<"$p")
	mkdir -p "$BASE/$id"
	cat >"$BASE/$id/pec.yaml.new" <<-EOF
		# Generated by integration/scripts/lab-up.sh for lab provider $p (node $id): do not edit.
		$(node_yaml "$id")
		provider:
		  name: "${P_NAME[$id]}"
		  domains: [$(all_domains "$id" | sed 's/ /, /g')]
		  service_address: ${P_SERVICE[$id]}
		  receipt_address: ${P_RECEIPT[$id]}
		  timezone: Europe/Rome
		  production: false
		signer:
		  pkcs11: {module: $SOFTHSM_MODULE, token: provider-$p, key: provider-$p, pin_env: PEC_PIN_$up}
		  certificate: $BASE/$p/cert-chain.pem
		  digest: sha256
		$(signer_keys "$p")
		index: {source: "ldap://$LAB_LDAP_HOST:$LDAP_PORT/o=postacert", refresh: $INDEX_REFRESH, cache: $BASE/$id/providers-index.ldif}
		trust: {anchors: [$BASE/ca/root.pem], crls: [$BASE/ca/crl/ca1.crl], crl_refresh: 10m}
		$(store_yaml "$p")
		milter: {listen: "unix:$BASE/$id/run/milter.sock"}
		confirm: {listen: "unix:$BASE/$id/run/confirm.sock", expiry: 30s}
		lmtp:
		  # Postfix's lmtp client runs as postfix; root is listed for the lab's tests and the LMTP
		  # benchmark, which talk to pec-lmtpd directly (a production install lists postfix only).
		  listen: "unix:$BASE/$id/run/lmtp.sock"
		  allow_users: [postfix, root]
		  dovecot: "unix:$BASE/$p/dovecot/run/lmtp"
		  doveadm: {url: "http://${P_IP[$p]}:$DOVEADM_PORT/doveadm/v1", api_key_file: $BASE/$p/dovecot/doveadm.key}
		  metrics_listen: "${P_IP[$id]}:$LMTPD_METRICS_PORT"
		  max_delay: ${PEC_LAB_MAX_DELAY:-24h}
		reinject: {addr: "unix:$(reinject_socket "$id")"$( [ "${PEC_LAB_DIRECT:-true}" = true ] && printf ', direct_addr: "unix:%s"' "$(deliver_socket "$id")")}
		clamd: {addr: "$LAB_CLAMD_HOST:$CLAMD_PORT", timeout: 30s}
		limits: {max_recipients: 500, max_size_times_recipients: ${PEC_LAB_SIZE_X_RCPTS:-30MB}, hard_max_size: 100MB}
		policy: {ordinary_mail: anomaly}
		log: {level: info, format: json}
		metrics: {listen: "${P_IP[$id]}:9100", pprof: ${PEC_LAB_PPROF:-false}}
	EOF
	# The daily seal of the legal log (DPR 68/2005 art. 10), timestamped by the lab TSA; left
	# out when bin/pecctl is missing (no TSA), and pec-milter then warns that it is not sealing.
	if [ "${USE_TSA:-0}" = 1 ]; then
		echo "seal: {tsa_url: \"$(tsa_url)\", tsa_ca: $BASE/tsa/tsa-ca.pem, signer_ca: $BASE/ca/root.pem, dir: $BASE/$p/seal}" \
			>>"$BASE/$id/pec.yaml.new"
	fi
	# Replaced only when it changed: a newer pec.yaml restarts the PEC processes.
	if cmp -s "$BASE/$id/pec.yaml.new" "$BASE/$id/pec.yaml"; then
		rm -f "$BASE/$id/pec.yaml.new"
	else
		mv -f "$BASE/$id/pec.yaml.new" "$BASE/$id/pec.yaml"
	fi
}

# user_quota ADDRESS: the Dovecot storage quota of a lab user ("" = none): P_QUOTA by local
# part, overridden by PEC_LAB_QUOTA="user@domain=1M other@domain=10K".
user_quota() {
	local addr=$1 q=${P_QUOTA[${1%@*}]:-} kv
	for kv in ${PEC_LAB_QUOTA:-}; do
		[ "${kv%%=*}" = "$addr" ] && q=${kv#*=}
	done
	printf '%s' "$q"
}

# ---- pec-milter / pec-lmtpd ------------------------------------------------------------------
# pec_process_start ID NAME BIN: start NAME for provider ID unless it already runs the current
# binary. The token PIN is passed in PEC_PIN_<ID> (pin_env in pec.yaml), exported in a subshell,
# never on a command line (ps shows command lines to every user). The run directory is root:postfix 0750 and the process runs with umask 000, so its
# milter socket is reachable by Postfix's smtpd and by nobody outside group postfix.
pec_process_start() {
	local id=$1 name=$2 bin=$3 up p run=$BASE/$1/run
	local pidfile=$run/$name.pid log=$BASE/$id/logs/$name.log
	p=$(prov "$id")
	up=$(tr 'a-z' 'A-Z' <<<"$p")
	mkdir -p "$run" "$BASE/$id/logs"
	chown root:postfix "$run" && chmod 750 "$run"
	if pid_alive "$pidfile"; then
		if [ "$(cat "$run/$name.bin" 2>/dev/null)" = "$bin" ] && ! [ "$bin" -nt "$pidfile" ] &&
			! [ "$BASE/$id/pec.yaml" -nt "$pidfile" ]; then
			return 0
		fi
		say "lab: restarting $name-$id (binary or pec.yaml changed)"
		stop_pidfile "$name-$id" "$pidfile"
	fi
	echo "$bin" >"$run/$name.bin"
	[ "$name" = pec-milter ] && rm -f "$run/milter.sock" "$run/confirm.sock"
	(
		cd "$BASE/$id"
		export "PEC_PIN_$up=$(secret "PIN_$p")" "SOFTHSM2_CONF=$HSM_DIR/softhsm2.conf"
		start_fg_daemon "$name-$id" "$pidfile" "$log" \
			bash -c 'umask 000 && exec "$@"' umask000 "$bin" -config "$BASE/$id/pec.yaml"
	)
}

pec_process_stop() {
	stop_pidfile "$2-$1" "$BASE/$1/run/$2.pid"
	[ "$2" = pec-milter ] && rm -f "$BASE/$1/run/milter.sock"
	return 0
}

# ---- the lab TSA: pecctl tsa serve (RFC 3161, test authority) -------------------------------
tsa_url() { printf 'http://%s:%s/' "$LAB_TSA_HOST" "$TSA_PORT"; }

# tsa_start BIN: create the authority in $BASE/tsa (synchronously, so pec.yaml's tsa_ca exists
# before pec-milter starts), then serve it unless the same binary already does.
tsa_start() {
	local bin=$1 dir=$BASE/tsa
	local pidfile=$dir/tsa.pid log=$dir/tsa.log
	mkdir -p "$dir"
	"$bin" tsa init -dir "$dir" >>"$log" 2>&1 || { show_log tsa "$log"; die "pecctl tsa init failed"; }
	if pid_alive "$pidfile"; then
		if [ "$(cat "$dir/tsa.bin" 2>/dev/null)" = "$bin" ] && ! [ "$bin" -nt "$pidfile" ]; then
			return 0
		fi
		say "lab: restarting the TSA (binary changed)"
		stop_pidfile tsa "$pidfile"
	fi
	echo "$bin" >"$dir/tsa.bin"
	start_fg_daemon tsa "$pidfile" "$log" "$bin" tsa serve -dir "$dir" -listen "$LAB_TSA_HOST:$TSA_PORT"
}

tsa_stop() { stop_pidfile tsa "$BASE/tsa/tsa.pid"; }

# ---- lab.json (integration/lab/lab.go), written atomically -----------------------------------
provider_json() {
	local id=$1 users="" u milter="" lmtpd="" lmtpd_metrics="" logs
	# Addresses, passwords (alphanumeric) and paths need no JSON escaping; jq checks the result.
	for u in ${P_USERS[$id]}; do
		users+="${users:+,}{\"address\":\"$(user_addr "$id" "$u")\",\"password\":\"$(secret "$(user_secret "$id" "$u")")\",\"quota\":\"$(user_quota "$(user_addr "$id" "$u")")\"}"
	done
	# Passwords and PINs reach jq through its environment (env.X), never its command line.
	local LAB_USERS="[$users]"
	export LAB_USERS
	logs="\"postfix\":\"$BASE/$id/postfix/maillog\",\"dovecot\":\"$BASE/$id/dovecot/dovecot.log\""
	if [ "$PEC_WIRING" = pec ] && is_pec "$id"; then
		milter=$BASE/$id/run/milter.sock
		logs+=",\"pec-milter\":\"$BASE/$id/logs/pec-milter.log\""
		if [ "$USE_LMTPD" = 1 ]; then
			lmtpd=unix:$BASE/$id/run/lmtp.sock
			lmtpd_metrics=http://${P_IP[$id]}:$LMTPD_METRICS_PORT
			logs+=",\"pec-lmtpd\":\"$BASE/$id/logs/pec-lmtpd.log\""
		fi
	fi
	logs="{$logs}"
	jq -n \
		--arg id "$id" --arg name "${P_NAME[$id]}" --arg ip "${P_IP[$id]}" --arg dom "${P_DOMAIN[$id]}" \
		--arg svc "${P_SERVICE[$id]}" --arg rcpt "${P_RECEIPT[$id]}" \
		--arg pfetc "$BASE/$id/postfix/etc" --arg pflog "$BASE/$id/postfix/maillog" \
		--arg reinject "$(is_pec "$id" && echo "unix:$(reinject_socket "$id")")" \
		--arg tls "$BASE/$id/tls/cert.pem" --arg delivery "${P_DELIVERY[$id]}" \
		--arg dvconf "$BASE/$id/dovecot/dovecot.conf" --arg dvlog "$BASE/$id/dovecot/dovecot.log" \
		--arg dvauth "$BASE/$id/dovecot/run/auth-postfix" \
		--arg dvadm "http://${P_IP[$id]}:$DOVEADM_PORT/doveadm/v1" --arg dvkey "$BASE/$id/dovecot/doveadm.key" \
		--arg lmtpdm "$lmtpd_metrics" --arg dvlmtp "unix:$BASE/$id/dovecot/run/lmtp" \
		--arg milter "$milter" --arg lmtpd "$lmtpd" --argjson logs "$logs" --argjson nodes "$(nodes_json "$id")" \
		'{id: $id, name: $name, ip: $ip, domain: $dom, service_address: $svc, receipt_address: $rcpt,
		  postfix: {config_dir: $pfetc, mx: ($ip + ":25"), submission: ($ip + ":587"),
		            reinject: $reinject, maillog: $pflog, tls_cert: $tls, delivery: $delivery},
		  dovecot: {config_file: $dvconf, imap: ($ip + ":143"), lmtp: $dvlmtp, log: $dvlog,
		            auth_socket: $dvauth, doveadm: $dvadm, doveadm_key_file: $dvkey},
		  milter_socket: $milter, lmtpd: $lmtpd, lmtpd_metrics: $lmtpdm, users: (env.LAB_USERS | fromjson), logs: $logs,
		  nodes: $nodes}' |
		if is_pec "$id"; then
			LAB_PIN=$(secret "PIN_$id") LAB_SOPIN=$(secret "SOPIN_$id") jq --arg lbl "provider-$id" \
				--arg keyid "${P_KEYID[$id]}" --arg cert "$BASE/$id/cert.pem" \
				--arg chain "$BASE/$id/cert-chain.pem" --arg sha1 "$(cert_sha1 "$BASE/$id/cert.der")" \
				--arg yaml "$BASE/$id/pec.yaml" \
				'. + {token: {label: $lbl, pin: env.LAB_PIN, so_pin: env.LAB_SOPIN, key_label: $lbl, key_id: $keyid},
				      cert: $cert, cert_chain: $chain, cert_sha1: $sha1, config_file: $yaml}'
		else
			cat
		fi
}

# signer_json ID: an extra test signer for lab.json.
signer_json() {
	local id=$1 d=$BASE/signers/$1
	jq -n --arg id "$id" --arg name "${P_NAME[$id]}" --arg svc "${P_SERVICE[$id]}" --arg dom "${P_DOMAIN[$id]}" \
		--arg rcpt "${P_RECEIPT[$id]}" --arg cert "$d/cert.pem" --arg key "$d/key.pem" --arg chain "$d/cert-chain.pem" \
		--arg sha1 "$(cert_sha1 "$d/cert.der")" --argjson listed "${SIGNER_LISTED[$id]}" --argjson revoked "${SIGNER_REVOKED[$id]}" \
		'{id: $id, name: $name, service_address: $svc, domain: $dom, receipt_address: $rcpt, cert: $cert, key: $key,
		  cert_chain: $chain, cert_sha1: $sha1, listed: $listed, revoked: $revoked}'
}

write_lab_json() {
	local providers="" signers="" id
	for id in "${PEC_IDS[@]}"; do
		providers+="${providers:+,}$(provider_json "$id")"
	done
	providers="[$providers]"
	for id in "${SIGNER_IDS[@]}"; do
		signers+="${signers:+,}$(signer_json "$id")"
	done
	signers="[$signers]"
	jq -n --arg base "$BASE" --arg wiring "$PEC_WIRING" --arg store "${PEC_STORE:-sqlite}" --argjson anodes "$A_NODES" \
		--arg root "$BASE/ca/root.pem" --arg rootkey "$BASE/ca/root.key" \
		--arg ca1 "$BASE/ca/ca1.pem" --arg ca1key "$BASE/ca/ca1.key" \
		--argjson providers "$providers" --argjson ordinary "$(provider_json o)" --argjson signers "$signers" \
		--arg crl "$BASE/ca/crl/ca1.crl" \
		--arg ldapurl "ldap://$SVC_IP:$LDAP_PORT" --arg ldappw "$(secret LDAP_PW)" \
		--arg ldif "$BASE/ldap/providers.ldif" --arg ldappid "$BASE/ldap/slapd.pid" \
		--arg ldaplog "$BASE/ldap/slapd.log" \
		--arg clamd "$SVC_IP:$CLAMD_PORT" --arg clamlog "$BASE/clamav/clamd.log" \
		--arg hsmconf "$BASE/softhsm/softhsm2.conf" --arg mod "$SOFTHSM_MODULE" \
		--arg tsaurl "$([ "$USE_TSA" = 1 ] && tsa_url)" --arg tsaca "$([ "$USE_TSA" = 1 ] && echo "$BASE/tsa/tsa-ca.pem")" \
		--arg tsalog "$([ "$USE_TSA" = 1 ] && echo "$BASE/tsa/tsa.log")" --arg tsapid "$([ "$USE_TSA" = 1 ] && echo "$BASE/tsa/tsa.pid")" \
		'{base: $base, wiring: $wiring, store: $store, a_nodes: $anodes,
		  ca: {cert: $root, key: $rootkey, intermediate: $ca1, intermediate_key: $ca1key, crl: $crl},
		  providers: $providers, ordinary: $ordinary, signers: $signers,
		  ldap: {url: $ldapurl, base_dn: "o=postacert", bind_dn: "cn=admin,o=postacert",
		         password: $ldappw, ldif: $ldif, pid_file: $ldappid, log: $ldaplog},
		  clamd: {addr: $clamd, log: $clamlog},
		  softhsm: {conf: $hsmconf, module: $mod},
		  tsa: {url: $tsaurl, ca: $tsaca, log: $tsalog, pid_file: $tsapid}}' >"$BASE/lab.json.new"
	chmod 600 "$BASE/lab.json.new"
	mv -f "$BASE/lab.json.new" "$BASE/lab.json"
}

print_summary() {
	local id secs=$1 TSA_LINE
	if [ "$USE_TSA" = 1 ]; then
		TSA_LINE="$(tsa_url) (RFC 3161 test authority)  CA $BASE/tsa/tsa-ca.pem  log $BASE/tsa/tsa.log; pec.yaml has seal: (daily log seal in $BASE/<id>/seal)"
	else
		TSA_LINE="not started ($PECCTL_BIN missing: make build): no seal: section, the log is not sealed"
	fi
	cat <<-EOF

		PEC lab is UP in ${secs}s   base: $BASE   wiring: $PEC_WIRING
		  description (addresses, users, passwords, PINs): $BASE/lab.json
		  SOFTHSM2_CONF=$BASE/softhsm/softhsm2.conf
	EOF
	for id in "${ALL_IDS[@]}"; do
		printf '  %s  %-26s %-12s %s\n' "$id" "${P_NAME[$id]}" "${P_DOMAIN[$id]}" "${P_IP[$id]}"
		printf '       postfix  MX :25  submission :587%s  delivery %s\n' \
			"$(is_pec "$id" && echo "  reinjection unix:$(reinject_socket "$id")")" "${P_DELIVERY[$id]}"
		printf '                log %s   config %s\n' "$BASE/$id/postfix/maillog" "$BASE/$id/postfix/etc"
		printf '       dovecot  IMAP :143  LMTP %s (mode 0600, user %s)  log %s\n' "$BASE/$id/dovecot/run/lmtp" "$(lmtp_user "$id")" "$BASE/$id/dovecot/dovecot.log"
		printf '       users    %s\n' "$(for u in ${P_USERS[$id]}; do printf '%s ' "$(user_addr "$id" "$u")"; done)"
		if is_pec "$id"; then
			printf '       token    provider-%s (key provider-%s, id %s)  cert %s  SHA-1 %s\n' \
				"$id" "$id" "${P_KEYID[$id]}" "$BASE/$id/cert-chain.pem" "$(cert_sha1 "$BASE/$id/cert.der")"
			printf '       pec.yaml %s\n' "$BASE/$id/pec.yaml"
			if [ "$PEC_WIRING" = pec ]; then
				printf '       pec-milter unix:%s  log %s\n' "$BASE/$id/run/milter.sock" "$BASE/$id/logs/pec-milter.log"
				if [ "$USE_LMTPD" = 1 ]; then
					printf '       pec-lmtpd  %s  log %s\n' "$BASE/$id/run/lmtp.sock" "$BASE/$id/logs/pec-lmtpd.log"
				else
					printf '       pec-lmtpd  not started (%s missing): Postfix delivers straight to Dovecot\n' "$LMTPD_BIN"
				fi
			fi
		fi
	done
	nodes_summary
	cat <<-EOF
		  slapd   ldap://$SVC_IP:$LDAP_PORT/ base o=postacert  LDIF $BASE/ldap/providers.ldif  log $BASE/ldap/slapd.log
		  clamd   $SVC_IP:$CLAMD_PORT (INSTREAM, test signatures only)  log $BASE/clamav/clamd.log
		  CA      root $BASE/ca/root.pem  intermediate $BASE/ca/ca1.pem
		  TSA     $TSA_LINE
		Stop with integration/scripts/lab-down.sh
		Time per step:$TIMES
	EOF
}
