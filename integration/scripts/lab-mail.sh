# shellcheck shell=bash
# Postfix and Dovecot of one lab mail system, sourced by lab-up.sh and lab-down.sh.
# The PEC part of each configuration is rendered from postfix-conf/ (main.cf.pec, master.cf.pec,
# dovecot-pec.conf): what postfix-conf/README.md tells a sysadmin is exactly what the lab runs.

PFCONF=$LAB_REPO/postfix-conf
declare -A POSTFIX_CHANGED=() DOVECOT_CHANGED=()

# apply_main_snippet ETC FILE: postconf -e every "name = value" of a rendered main.cf snippet.
apply_main_snippet() {
	local etc=$1 file=$2 line cur="" settings=()
	while IFS= read -r line || [ -n "$line" ]; do
		[[ $line =~ ^[[:space:]]*(#|$) ]] && continue
		if [[ $line =~ ^[[:space:]] ]]; then
			cur+=" ${line#"${line%%[![:space:]]*}"}"
			continue
		fi
		[ -n "$cur" ] && settings+=("$cur")
		cur=$line
	done <"$file"
	[ -n "$cur" ] && settings+=("$cur")
	postconf -c "$etc" -e "${settings[@]}"
}

# apply_master_snippet ETC FILE [SKIP_SERVICES]: postconf -M every entry of a rendered master.cf
# snippet (continuation lines joined), except the entries whose service name is in the
# space-separated SKIP_SERVICES.
apply_master_snippet() {
	local etc=$1 file=$2 skip=${3:-} line cur="" entries=() e
	while IFS= read -r line || [ -n "$line" ]; do
		[[ $line =~ ^[[:space:]]*(#|$) ]] && continue
		if [[ $line =~ ^[[:space:]] ]]; then
			cur+=" ${line#"${line%%[![:space:]]*}"}"
			continue
		fi
		[ -n "$cur" ] && entries+=("$cur")
		cur=$line
	done <"$file"
	[ -n "$cur" ] && entries+=("$cur")
	for e in "${entries[@]}"; do
		read -r -a f <<<"$e"
		[[ " $skip " == *" ${f[0]} "* ]] && continue
		postconf -c "$etc" -M "${f[0]}/${f[1]}=$e"
	done
}

# postfix_run ETC ARGS...: postfix prints its fatal errors only to a TTY (lab-recipe §2 gotcha
# 1); rerun under script(1) to show them when a command fails.
postfix_run() {
	local etc=$1
	shift
	postfix -c "$etc" "$@" </dev/null >/dev/null 2>&1 9>&- && return 0
	script -qec "postfix -c $etc $*" /dev/null </dev/null >&2 9>&- || true
	return 1
}

# postfix_effective DIR: the non-default main.cf settings and the master.cf services, sorted.
postfix_effective() {
	[ -f "$1/main.cf" ] && [ -f "$1/master.cf" ] || return 0
	postconf -c "$1" -n 2>/dev/null | sort
	postconf -c "$1" -M 2>/dev/null | sort
	postconf -c "$1" -P 2>/dev/null | sort
}

postfix_running() { postfix -c "$1" status </dev/null >/dev/null 2>&1; }

# mail_tls ID: a self-signed certificate for mx.<domain> (STARTTLS on :25 and :587).
mail_tls() {
	local id=$1 d=$BASE/$1/tls dom=${P_DOMAIN[$1]}
	mkdir -p "$d"
	[ -s "$d/cert.pem" ] && return 0
	(umask 077 && openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
		-keyout "$d/key.pem" -out "$d/cert.pem" -subj "/CN=mx.$dom" \
		-addext "subjectAltName=DNS:mx.$dom,IP:${P_IP[$id]}" >>"$d/openssl.log" 2>&1) ||
		die "TLS certificate of $id failed"
	chmod 644 "$d/cert.pem"
}

# dovecot_configure ID: users file (passwords from the secrets), dovecot.conf and the PEC snippet.
# lmtp_user ID: who may open Dovecot's LMTP socket: pec-lmtpd's user (root in the lab) when
# pec-lmtpd delivers, Postfix's lmtp client otherwise (plain wiring, the ordinary host).
lmtp_user() {
	if [ "$PEC_WIRING" = pec ] && [ "$USE_LMTPD" = 1 ] && is_pec "$1"; then echo root; else echo postfix; fi
}

dovecot_configure() {
	local id=$1 d=$BASE/$1/dovecot u
	mkdir -p "$d/run" "$d/state" "$d/mail"
	chown vmail:vmail "$d/mail"
	local q a
	(
		umask 077
		for u in ${P_USERS[$id]}; do
			a=$(user_addr "$id" "$u") q=$(user_quota "$(user_addr "$id" "$u")")
			printf '%s:{PLAIN}%s::::::%s\n' "$a" "$(secret "$(user_secret "$id" "$u")")" "${q:+userdb_quota_rule=*:storage=$q}"
		done >"$d/users.new"
		# "doveadm_api_key = <file" keeps the bytes verbatim: no final newline (pec-lmtpd reads
		# the same file the same way).
		printf '%s' "$(secret "DOVEADM_KEY_$id")" >"$d/doveadm.key.new"
	)
	chown root:dovecot "$d/users.new" "$d/doveadm.key.new" && chmod 640 "$d/users.new" "$d/doveadm.key.new"
	mv -f "$d/users.new" "$d/users"
	mv -f "$d/doveadm.key.new" "$d/doveadm.key"
	render "$PFCONF/dovecot-pec.conf" "$d/pec.conf" \
		DOVEADM_ADDRESS="${P_IP[$id]}" DOVEADM_PORT="$DOVEADM_PORT" DOVEADM_KEY_FILE="$d/doveadm.key" \
		LMTP_USER="$(lmtp_user "$id")" AUTH_SOCKET="$d/run/auth-postfix" \
		POSTMASTER="postmaster@${P_DOMAIN[$id]}"
	render "$LAB_REPO/integration/dovecot/dovecot.conf.in" "$d/dovecot.conf" \
		ID="$id" IP="${P_IP[$id]}" RUN_DIR="$d/run" STATE_DIR="$d/state" LOG="$d/dovecot.log" \
		VMAIL_UID="$(id -u vmail)" USERS_FILE="$d/users" MAIL_DIR="$d/mail" PEC_SNIPPET="$d/pec.conf"
	local fp
	fp=$(cat "$d/dovecot.conf" "$d/pec.conf" "$d/users" "$d/doveadm.key" | sha256sum)
	DOVECOT_CHANGED[$id]=1
	if [ "$(cat "$d/.config-fingerprint" 2>/dev/null)" = "$fp" ]; then
		DOVECOT_CHANGED[$id]=0
		return 0
	fi
	doveconf -c "$d/dovecot.conf" -n >/dev/null 2>"$d/doveconf.err" ||
		{ cat "$d/doveconf.err" >&2; die "dovecot config of $id is invalid"; }
	echo "$fp" >"$d/.config-fingerprint"
}

dovecot_start() {
	local id=$1 d=$BASE/$1/dovecot
	if pid_alive "$d/run/master.pid"; then
		[ "${DOVECOT_CHANGED[$id]:-1}" = 1 ] || return 0
		dovecot -c "$d/dovecot.conf" reload </dev/null >>"$d/dovecot.log" 2>&1 9>&- ||
			die "dovecot reload ($id) failed"
	else
		dovecot -c "$d/dovecot.conf" </dev/null >>"$d/dovecot.log" 2>&1 9>&- ||
			{ show_log "dovecot-$id" "$d/dovecot.log"; die "dovecot ($id) did not start"; }
	fi
}

dovecot_stop() {
	local d=$BASE/$1/dovecot i
	[ -f "$d/dovecot.conf" ] || return 0
	pid_alive "$d/run/master.pid" || return 0
	dovecot -c "$d/dovecot.conf" stop </dev/null >/dev/null 2>&1 || true
	for i in $(seq 1 50); do pid_alive "$d/run/master.pid" || return 0; sleep 0.1; done
	stop_pidfile "dovecot-$1" "$d/run/master.pid"
}

# postfix_configure ID DELIVERY MILTER: a fresh main.cf/master.cf each run (deterministic, so a
# re-run converges), lab base settings first, then the postfix-conf snippets.
postfix_configure() {
	local id=$1 delivery=$2 milter=$3 d=$BASE/$1/postfix ip=${P_IP[$1]} dom=${P_DOMAIN[$1]}
	local etc=$d/etc stage=$d/etc.stage routes="" maps="" other f m
	mkdir -p "$etc" "$d/spool" "$d/data"
	rm -rf "$stage" && mkdir -p "$stage"
	# Every other mail system, at its MX; one with several nodes through mx_routes (lab-nodes.sh).
	for other in "${ALL_IDS[@]}"; do
		[ "$other" = "$(prov "$id")" ] && continue
		m=$(mx_routes "$other")
		if [ -n "$m" ]; then
			maps+="$m "
			continue
		fi
		for x in $(all_domains "$other"); do routes+="${routes:+, }$x=smtp:[${P_IP[$other]}]:25"; done
	done
	# Warm runs: when nothing that goes into the configuration changed since the last good one,
	# keep it (postconf and postfix check are slow on a loaded machine).
	local fp
	fp=$(cat "$PFCONF"/main.cf.pec "$PFCONF"/master.cf.pec \
		/etc/postfix/master.cf "${BASH_SOURCE[0]}" - <<<"$id|$delivery|$milter|$maps|$routes|$BASE|$ip" | sha256sum)
	POSTFIX_CHANGED[$id]=0
	echo 0 >"$d/.changed"
	# The fingerprint covers the generated files too, so a hand edit is undone by the next run.
	if [ -f "$etc/main.cf" ] && [ "$(cat "$d/.config-fingerprint" 2>/dev/null)" = "$fp $(cat "$etc/main.cf" "$etc/master.cf" | sha256sum)" ]; then
		return 0
	fi
	# Built from scratch in a staging directory each run, so a re-run converges and a running
	# instance never sees a half-written main.cf.
	cp /etc/postfix/master.cf "$stage/master.cf"
	: >"$stage/main.cf"
	# The installation a sysadmin already has: instance paths, names, routing, TLS.
	postconf -c "$stage" -e \
		"compatibility_level = 3.6" \
		"queue_directory = $d/spool" "data_directory = $d/data" \
		"maillog_file_prefixes = $BASE" "maillog_file = $d/maillog" \
		"myhostname = mx.$dom" "mydomain = $dom" 'myorigin = $mydomain' \
		"mydestination =" "local_recipient_maps =" "alias_maps =" "alias_database =" \
		"local_transport = error:5.1.1 no local delivery on this host" \
		"relay_domains =" "inet_interfaces = $ip" "inet_protocols = ipv4" \
		"smtp_bind_address = $ip" "mynetworks = 127.0.0.1/32 $ip/32" \
		"smtp_dns_support_level = disabled" \
		"transport_maps = $maps inline:{ $routes }" \
		"smtpd_tls_cert_file = $BASE/$id/tls/cert.pem" "smtpd_tls_key_file = $BASE/$id/tls/key.pem" \
		"smtpd_tls_security_level = may" "smtpd_tls_loglevel = 1" "smtpd_tls_received_header = yes" \
		"smtp_tls_security_level = may" "smtp_tls_loglevel = 1" \
		'smtp_tls_session_cache_database = btree:${data_directory}/smtp_scache' \
		"biff = no" "append_dot_mydomain = no" "readme_directory = no" \
		"queue_run_delay = 10s" "minimal_backoff_time = 10s" "maximal_backoff_time = 60s"
	# The PEC part, exactly as postfix-conf/ ships it.
	# Same provider through the reception point (postfix-conf/README.md), when there is one.
	local loop="static:DUNNO" x
	if [ -n "$milter" ]; then
		loop=""
		for x in $(all_domains "$id"); do loop+="${loop:+, }{ $x = FILTER pec-loop:[$ip]:10027 }"; done
		loop="inline:{ $loop }"
	fi
	render "$PFCONF/main.cf.pec" "$stage/main.cf.pec" \
		PEC_MILTER="$milter" PEC_DOMAINS="$(all_domains "$id")" DELIVERY_TRANSPORT="$delivery" PEC_LOOP_TABLE="$loop" \
		DOVECOT_AUTH_SOCKET="$BASE/$(prov "$id")/dovecot/run/auth-postfix" \
		CONFIRM_DOMAIN=confirm.pec.invalid CONFIRM_SOCKET="$BASE/$id/run/confirm.sock" \
		SITE_TRANSPORT_MAPS="$maps inline:{ $routes }"
	render "$PFCONF/master.cf.pec" "$stage/master.cf.pec" \
		MX_SERVICE=smtp SUBMISSION_SERVICE=submission LOOP_SERVICE="$ip:10027" \
		SUBMISSION_CLEANUP="$([ "$id" = o ] && echo cleanup || echo pec-cleanup)"
	apply_main_snippet "$stage" "$stage/main.cf.pec"
	postconf -c "$stage" -F '*/*/chroot = n'
	if [ "$id" = o ]; then
		apply_master_snippet "$stage" "$stage/master.cf.pec" "pec-reinject pec-deliver $ip:10027" # O is plain Internet mail
	else
		apply_master_snippet "$stage" "$stage/master.cf.pec"
	fi
	if [ ! -f "$d/.permissions-set" ]; then
		postfix_run "$stage" set-permissions || die "postfix set-permissions ($id) failed"
		touch "$d/.permissions-set"
	fi
	# postconf -e writes parameters in hash order, so compare the effective settings, not bytes.
	[ "$(postfix_effective "$stage")" = "$(postfix_effective "$etc")" ] || POSTFIX_CHANGED[$id]=1
	echo "${POSTFIX_CHANGED[$id]}" >"$d/.changed"
	if [ "${POSTFIX_CHANGED[$id]}" = 1 ]; then
		# postfix check is slow (it walks the queue); run it only on a new configuration.
		postfix_run "$stage" check || die "postfix check ($id) failed"
		rm -f "$etc/pec_sender_login.regexp" # no longer shipped (sender checks are pec-milter's)
		for f in main.cf.pec master.cf.pec master.cf main.cf; do
			mv -f "$stage/$f" "$etc/$f"
		done
	fi
	rm -rf "$stage"
	echo "$fp $(cat "$etc/main.cf" "$etc/master.cf" | sha256sum)" >"$d/.config-fingerprint"
}

postfix_start() {
	local id=$1 etc=$BASE/$1/postfix/etc
	if postfix_running "$etc"; then
		# postfix_configure may have run in a subshell: its verdict is in .changed.
		[ "$(cat "$BASE/$id/postfix/.changed" 2>/dev/null || echo 1)" = 1 ] || return 0
		postfix_run "$etc" reload || die "postfix reload ($id) failed"
	else
		postfix_run "$etc" start || { show_log "postfix-$id" "$BASE/$id/postfix/maillog"; die "postfix ($id) did not start"; }
	fi
}

postfix_stop() {
	local etc=$BASE/$1/postfix/etc
	[ -f "$etc/main.cf" ] || return 0
	postfix_running "$etc" || return 0
	postfix_run "$etc" stop || true
}
