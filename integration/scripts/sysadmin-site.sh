# shellcheck shell=bash
# Provider C's site, sourced by sysadmin-install.sh: the plain Postfix + Dovecot before PEC,
# the site's answers to the README's variables, the outside world's part (CA, index), and
# systemd's part (starting a unit of postfix-conf/systemd/ the way systemd would).
# Uses DIR (C's root), IP, LOG, DOMAIN, NAME, USERS and labv from sysadmin-install.sh.
# shellcheck disable=SC2153 # USERS and the others are set by sysadmin-install.sh

declare -A PW=()

# site_plain: a Postfix instance and a Dovecot instance as a Debian admin sets them up for
# virtual mailboxes: Debian's stock master.cf (chroot y) with the submission entry enabled,
# SASL and LMTP through sockets in Postfix's queue directory (private/auth,
# private/dovecot-lmtp), Debian's stock /etc/dovecot with local.conf and a passwd-file.
site_plain() {
	local pf=$DIR/postfix dv=$DIR/dovecot routes="" d u
	mkdir -p "$pf/etc" "$pf/spool" "$pf/data" "$dv/run" "$dv/state" "$dv/mail" "$DIR/tls" "$DIR/state" "$DIR/logs" "$DIR/trust"
	chown vmail:vmail "$dv/mail"
	(umask 077 && openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 30 -keyout "$DIR/tls/key.pem" \
		-out "$DIR/tls/cert.pem" -subj "/CN=mx.$DOMAIN" -addext "subjectAltName=DNS:mx.$DOMAIN,IP:$IP") >>"$LOG" 2>&1
	chmod 644 "$DIR/tls/cert.pem"
	# No DNS here: the site routes the other systems' domains by address, as the lab's do.
	for d in providers.0 providers.1 ordinary; do
		routes+="${routes:+, }$(labv "$d.domain")=smtp:[$(labv "$d.ip")]:25"
	done
	cp /etc/postfix/master.cf "$pf/etc/master.cf"
	: >"$pf/etc/main.cf"
	# shellcheck disable=SC2016 # $mydomain is Postfix's
	postconf -c "$pf/etc" -e "compatibility_level = 3.6" \
		"queue_directory = $pf/spool" "data_directory = $pf/data" \
		"maillog_file_prefixes = $DIR" "maillog_file = $pf/maillog" \
		"myhostname = mx.$DOMAIN" "mydomain = $DOMAIN" 'myorigin = $mydomain' \
		"mydestination =" "local_recipient_maps =" "alias_maps =" "alias_database =" \
		"inet_interfaces = $IP" "inet_protocols = ipv4" "smtp_bind_address = $IP" \
		"mynetworks = 127.0.0.1/32 $IP/32" "smtp_dns_support_level = disabled" \
		"transport_maps = inline:{ $routes }" \
		"smtpd_tls_cert_file = $DIR/tls/cert.pem" "smtpd_tls_key_file = $DIR/tls/key.pem" \
		"smtpd_tls_security_level = may" "smtp_tls_security_level = may" \
		'smtp_tls_session_cache_database = btree:${data_directory}/smtp_scache' \
		"virtual_mailbox_domains = $DOMAIN" "virtual_transport = lmtp:unix:private/dovecot-lmtp" \
		"smtpd_sasl_type = dovecot" "smtpd_sasl_path = private/auth" \
		"queue_run_delay = 10s" "minimal_backoff_time = 10s" "maximal_backoff_time = 60s"
	postconf -c "$pf/etc" -M "submission/inet=submission inet n - y - - smtpd -o syslog_name=postfix/submission \
-o smtpd_tls_security_level=encrypt -o smtpd_sasl_auth_enable=yes -o smtpd_tls_auth_only=yes \
-o smtpd_client_restrictions=permit_sasl_authenticated,reject -o smtpd_relay_restrictions=permit_sasl_authenticated,reject"
	# No postfix check or set-permissions: they walk every file and are slow; postfix start
	# creates the queue directories and fails on a fatal error. data_directory is postfix's.
	chown postfix "$pf/data"

	rm -rf "${dv:?}/etc" && cp -a /etc/dovecot "$dv/etc"
	sed -i 's/^!include auth-system.conf.ext/#&/' "$dv/etc/conf.d/10-auth.conf"
	for u in $USERS; do PW[$u]=$(randpw 20); done
	(umask 077 && for u in $USERS; do printf '%s@%s:{PLAIN}%s::::::\n' "$u" "$DOMAIN" "${PW[$u]}"; done >"$dv/users")
	chown root:dovecot "$dv/users" && chmod 640 "$dv/users"
	cat >"$dv/etc/local.conf" <<-EOF
		# Provider C's site (sysadmin-install.sh): virtual users in a passwd-file, Maildir.
		instance_name = dovecot-pec-c
		base_dir = $dv/run
		state_dir = $dv/state
		log_path = $dv/dovecot.log
		listen = $IP
		# loopback test site: IMAP without TLS
		ssl = no
		disable_plaintext_auth = no
		mail_location = maildir:~/Maildir
		mail_uid = vmail
		mail_gid = vmail
		first_valid_uid = $(id -u vmail)
		last_valid_uid = $(id -u vmail)
		passdb {
		  driver = passwd-file
		  args = scheme=PLAIN username_format=%Lu $dv/users
		}
		userdb {
		  driver = passwd-file
		  args = username_format=%Lu $dv/users
		  default_fields = uid=vmail gid=vmail home=$dv/mail/%Ld/%Ln
		}
		service imap-login {
		  inet_listener imap {
		    address = $IP
		    port = 143
		  }
		  inet_listener imaps {
		    port = 0
		  }
		}
		service auth {
		  unix_listener $pf/spool/private/auth {
		    mode = 0660
		    user = postfix
		    group = postfix
		  }
		}
	EOF
	cat >"$dv/etc/conf.d/90-postfix-lmtp.conf" <<-EOF
		# Postfix delivers here (virtual_transport = lmtp:unix:private/dovecot-lmtp).
		service lmtp {
		  unix_listener $pf/spool/private/dovecot-lmtp {
		    mode = 0600
		    user = postfix
		    group = postfix
		  }
		}
	EOF
	# Postfix first: it creates private/, where Dovecot's listeners for it go.
	postfix_run "$pf/etc" start || { show_log postfix "$pf/maillog"; die "plain postfix of C did not start"; }
	dovecot -c "$dv/etc/dovecot.conf" </dev/null >>"$dv/dovecot.log" 2>&1 9>&- || { show_log dovecot "$dv/dovecot.log"; die "plain dovecot of C did not start"; }
	if ! { wait_tcp "C postfix" "$IP" 25 "$pf/maillog" && wait_tcp "C submission" "$IP" 587 "$pf/maillog" &&
		wait_tcp "C imap" "$IP" 143 "$dv/dovecot.log"; }; then
		die "the plain site of C is not up"
	fi
}

# site_env BINDIR: the site's answers to the README's variables (its install:site block), and
# SRC, the "source tree" the README's steps run in: bin/ (BINDIR's programs) and postfix-conf/.
site_env() {
	local bindir=$1 p
	SRC=$DIR/src
	mkdir -p "$SRC/bin"
	for p in pec-milter pec-lmtpd pecctl; do
		[ -x "$bindir/$p" ] || die "$bindir/$p missing"
		ln -sf "$bindir/$p" "$SRC/bin/$p"
	done
	ln -sfn "$LAB_REPO/postfix-conf" "$SRC/postfix-conf"
	# The CAs a provider is given (AgID CA1's and the TSA's stand-ins), installed on the host.
	cp "$(labv ca.cert)" "$DIR/trust/root.pem"
	cp "$(labv tsa.ca)" "$DIR/trust/tsa-ca.pem"
	chmod 644 "$DIR/trust/"*.pem
	export PEC_DOMAIN=$DOMAIN PEC_NAME=$NAME
	export POSTFIX_DIR=$DIR/postfix/etc DOVECOT_DIR=$DIR/dovecot/etc DOVECOT_RUN=$DIR/dovecot/run
	export PEC_BIN=$DIR/bin PEC_ETC=$DIR/etc/gestore PEC_LIB=$DIR/lib/gestore PEC_RUN=$DIR/run/pec
	export LOCAL_ADDR=$IP
	INDEX_URL="$(labv ldap.url)/$(labv ldap.base_dn)"
	export INDEX_URL TRUST_ANCHORS=$DIR/trust/root.pem CRL_URL CLAMD TSA_URL TSA_CA=$DIR/trust/tsa-ca.pem
	CRL_URL=$(labv ca.crl) CLAMD=$(labv clamd.addr) TSA_URL=$(labv tsa.url)
	HSM_MODULE=$(labv softhsm.module)
	export HSM_MODULE HSM_TOKEN=provider-c HSM_KEY=provider-c
	PEC_PIN=$(randpin) SO_PIN=$(randpin)
	export PEC_PIN SO_PIN
	mkdir -p "$DIR/etc" "$DIR/lib" "$DIR/run"
}

# before_dovecot: the README asks to remove the LMTP listener Postfix delivered to.
before_dovecot() { rm -f "$DOVECOT_DIR/conf.d/90-postfix-lmtp.conf"; }

# after_keys: the certification authority (the lab's CA1, AgID CA1's stand-in) issues the
# certificate for the CSR with the RFC 6109 §5.5 profile, as lab-pki.sh does for A and B.
after_keys() {
	local d=$DIR/ca-side ca key
	ca=$(labv ca.intermediate) key=$(labv ca.intermediate_key)
	mkdir -p "$d"
	printf '[provider]\nkeyUsage = critical,digitalSignature\nextendedKeyUsage = emailProtection\nsubjectAltName = email:%s\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid:always\n' \
		"posta-certificata@$DOMAIN" >"$d/cert.ext"
	openssl x509 -req -in "$PEC_LIB/signer.csr" -CA "$ca" -CAkey "$key" -set_serial "0x$(openssl rand -hex 8)" \
		-days 825 -sha256 -extfile "$d/cert.ext" -extensions provider -out "$d/cert.pem" >>"$LOG" 2>&1 ||
		die "the lab CA did not sign C's CSR"
	cat "$d/cert.pem" "$ca" >"$PEC_ETC/signer-chain.pem"
	chmod 644 "$PEC_ETC/signer-chain.pem"
}

# after_index: AgID publishes the record: it goes into the lab's index (slapd), where A and B
# find it at their next refresh (index.refresh of the lab's pec.yaml).
after_index() {
	local pw=$DIR/state/ldap.pw
	(umask 077 && labv ldap.password | tr -d '\n' >"$pw")
	sed -n 's/^dn: //p' "$PEC_LIB/index-record.ldif" | head -n1 >"$DIR/state/index-dn"
	ldapadd -x -H "$(labv ldap.url)" -D "$(labv ldap.bind_dn)" -y "$pw" -f "$PEC_LIB/index-record.ldif" >>"$LOG" 2>&1 ||
		die "publishing C's record in the lab index failed"
}

# index_unpublish: take C's record out of the lab's index again.
index_unpublish() {
	local dn
	[ -s "$DIR/state/index-dn" ] && [ -n "${LABV[ldap.url]:-}" ] || return 0
	dn=$(cat "$DIR/state/index-dn")
	ldapdelete -x -H "$(labv ldap.url)" -D "$(labv ldap.bind_dn)" -y "$DIR/state/ldap.pw" "$dn" >>"$DIR/install.log" 2>&1 ||
		say "sysadmin: could not delete $dn from the lab index"
	rm -f "$DIR/state/index-dn"
}

# unit_start NAME: what systemd does for postfix-conf/systemd/NAME.service: create its
# RuntimeDirectory and StateDirectory (the site's PEC_RUN and PEC_LIB) with their owner and
# mode, read its EnvironmentFile, and run ExecStart as User/Group with SupplementaryGroups and
# UMask. The units' default paths are replaced by the site's, as a drop-in would do.
unit_start() {
	local unit=$SRC/postfix-conf/systemd/$1.service user group groups envfile umask argv
	key() { sed -n "s/^$1=//p" "$unit" | tail -n1; }
	site() { sed -e "s|/usr/local/bin|$PEC_BIN|g" -e "s|/etc/gestore|$PEC_ETC|g"; }
	user=$(key User) group=$(key Group) groups=$(key SupplementaryGroups | tr ' ' ,) umask=$(key UMask)
	if [ "$(key RuntimeDirectory)" != pec ] || [ "$(key StateDirectory)" != gestore ]; then
		die "$1.service: RuntimeDirectory or StateDirectory changed: update unit_start"
	fi
	install -d -o "$user" -g "$group" -m "$(key RuntimeDirectoryMode)" "$PEC_RUN"
	install -d -o "$user" -g "$group" -m "$(key StateDirectoryMode)" "$PEC_LIB"
	envfile=$(key EnvironmentFile | site)
	read -r -a argv <<<"$(key ExecStart | site)"
	say "sysadmin: starting $1 as systemd would: ${argv[*]} (user $user, groups $groups)"
	(
		set -a
		# shellcheck disable=SC1090
		[ -f "${envfile#-}" ] && . "${envfile#-}"
		set +a
		# shellcheck disable=SC2016 # expanded by the inner bash
		start_fg_daemon "$1" "$DIR/state/$1.pid" "$DIR/logs/$1.log" \
			setpriv --reuid="$user" --regid="$group" --groups="$groups" -- \
			bash -c 'umask "$0" && exec "$@"' "$umask" "${argv[@]}"
	)
}

write_provider_json() {
	local users="" u
	for u in $USERS; do users+="${users:+,}{\"address\":\"$u@$DOMAIN\",\"password\":\"${PW[$u]}\"}"; done
	LAB_USERS="[$users]" jq -n --arg ip "$IP" --arg dom "$DOMAIN" --arg name "$NAME" --arg d "$DIR" \
		--arg yaml "$PEC_ETC/pec.yaml" --arg chain "$PEC_ETC/signer-chain.pem" \
		'{id: "c", name: $name, ip: $ip, domain: $dom,
		  service_address: ("posta-certificata@" + $dom), receipt_address: ("ricevute@" + $dom),
		  postfix: {config_dir: ($d + "/postfix/etc"), mx: ($ip + ":25"), submission: ($ip + ":587"),
		            maillog: ($d + "/postfix/maillog"), tls_cert: ($d + "/tls/cert.pem")},
		  dovecot: {config_file: ($d + "/dovecot/etc/dovecot.conf"), imap: ($ip + ":143"), log: ($d + "/dovecot/dovecot.log")},
		  users: (env.LAB_USERS | fromjson), config_file: $yaml, cert_chain: $chain,
		  logs: {postfix: ($d + "/postfix/maillog"), dovecot: ($d + "/dovecot/dovecot.log"),
		         "pec-milter": ($d + "/logs/pec-milter.log"), "pec-lmtpd": ($d + "/logs/pec-lmtpd.log")}}' \
		>"$DIR/provider.json"
}
