# shellcheck shell=bash
# PKI of the lab, sourced by lab-up.sh: the lab CA, the providers' certificates on their SoftHSM2
# tokens, and the providers-index LDIF.
#
# CA choice (documented in integration/README.md): a root plus one intermediate, like the real
# chain "Actalis Authentication Root CA -> AgID CA1 -> provider" (pec-spec §8.2):
#   ca/root.pem  "PEC Lab Root CA"  self-signed trust anchor        (lab.json ca.cert / ca.key)
#   ca/ca1.pem   "PEC Lab CA1"      CA:TRUE pathlen 0, policy 1.3.76.16.3.1, EKU
#                                   clientAuth+emailProtection, as AgID CA1 (ca.intermediate)
#   <id>/cert.pem  the provider certificate, issued by CA1 for the key generated on the token
#   <id>/cert-chain.pem  provider certificate then CA1 (never the root), for signer.certificate
# No nameConstraints on CA1, so tests may issue more provider certificates from it.

# pki_ca DIR: create the root and the intermediate once.
pki_ca() {
	local d=$1
	mkdir -p "$d"
	[ -s "$d/ca1.pem" ] && [ -s "$d/root.pem" ] && return 0
	(
		umask 077
		openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
			-keyout "$d/root.key" -out "$d/root.pem" \
			-subj "/C=IT/O=PEC Lab/CN=PEC Lab Root CA" \
			-addext "basicConstraints=critical,CA:TRUE" \
			-addext "keyUsage=critical,keyCertSign,cRLSign" \
			-addext "subjectKeyIdentifier=hash"
		cat >"$d/ca1.ext" <<-EXT
			[ca1]
			basicConstraints = critical,CA:TRUE,pathlen:0
			keyUsage = critical,keyCertSign,cRLSign
			extendedKeyUsage = clientAuth,emailProtection
			certificatePolicies = 1.3.76.16.3.1
			subjectKeyIdentifier = hash
			authorityKeyIdentifier = keyid:always
		EXT
		openssl req -new -newkey rsa:2048 -nodes -keyout "$d/ca1.key" -out "$d/ca1.csr" \
			-subj "/C=IT/O=PEC Lab/CN=PEC Lab CA1"
		openssl x509 -req -in "$d/ca1.csr" -CA "$d/root.pem" -CAkey "$d/root.key" \
			-set_serial "0x$(openssl rand -hex 8)" -days 3650 -sha256 \
			-extfile "$d/ca1.ext" -extensions ca1 -out "$d/ca1.pem"
		chmod 644 "$d/root.pem" "$d/ca1.pem"
	) >>"$d/openssl.log" 2>&1 || { show_log openssl "$d/openssl.log"; die "lab CA creation failed"; }
}

# pki_provider ID NAME SERVICE_ADDRESS TOKEN_LABEL PIN KEY_ID [KEY_LABEL DIR]: make sure the
# token holds the key pair and the certificate, and that DIR/cert.pem, cert.der, cert-chain.pem
# exist (DIR defaults to $BASE/ID, KEY_LABEL to TOKEN_LABEL; another key of the same token for an
# extra PEC domain of the provider has its own label, id and directory).
# The private key never leaves the token: the certificate is made from the exported public key
# with `openssl x509 -new -force_pubkey`, signed by CA1 (RFC 6109 §5.5 profile, pec-spec §8.1).
pki_provider() {
	local id=$1 name=$2 service=$3 label=$4 pin=$5 keyid=$6 keylabel=${7:-$4} d=${8:-$BASE/$1}
	local ca=$BASE/ca module=$SOFTHSM_MODULE
	mkdir -p "$d"
	# PINs travel in the environment, never on a command line (issue 12 item 10).
	SO_PIN=$(secret "SOPIN_$id") TOKEN_PIN=$pin "$LAB_SCRIPTS/softhsm-token.sh" "$HSM_DIR" "$label" "$keylabel" "$keyid" >/dev/null
	export SOFTHSM2_CONF=$HSM_DIR/softhsm2.conf
	p11() { TOKEN_PIN=$pin pkcs11-tool --module "$module" --token-label "$label" "$@"; }

	if [ ! -s "$d/cert.pem" ] || ! openssl x509 -in "$d/cert.pem" -noout -checkend 86400 >/dev/null; then
		(
			set -e
			p11 --read-object --type pubkey --id "$keyid" -o "$d/pub.der"
			openssl pkey -pubin -inform DER -in "$d/pub.der" -out "$d/pub.pem"
			cat >"$d/cert.ext" <<-EXT
				[provider]
				keyUsage = critical,digitalSignature
				extendedKeyUsage = emailProtection
				subjectAltName = email:$service
				subjectKeyIdentifier = hash
				authorityKeyIdentifier = keyid:always
			EXT
			# RFC 6109 §5.5: providerName in the subject (O and CN), the service address only in
			# the rfc822 subjectAltName, critical keyUsage digitalSignature, AKI and SKI, and NO
			# BasicConstraints (openssl adds none unless the extfile asks for it).
			openssl x509 -new -subj "/C=IT/O=$name/CN=Posta Certificata $name" \
				-force_pubkey "$d/pub.pem" -CA "$ca/ca1.pem" -CAkey "$ca/ca1.key" \
				-set_serial "0x$(openssl rand -hex 8)" -days 825 -sha256 \
				-extfile "$d/cert.ext" -extensions provider -out "$d/cert.pem.new"
			mv -f "$d/cert.pem.new" "$d/cert.pem"
			rm -f "$d/cert.der"
		) >>"$d/pki.log" 2>&1 || { show_log pki "$d/pki.log"; die "certificate of provider $id failed"; }
	fi
	openssl x509 -in "$d/cert.pem" -outform DER -out "$d/cert.der"
	cat "$d/cert.pem" "$ca/ca1.pem" >"$d/cert-chain.pem.new" && mv -f "$d/cert-chain.pem.new" "$d/cert-chain.pem"

	# The token holds the same certificate under the key's CKA_ID; replace it when it changed.
	local onboard
	onboard=$({ p11 --read-object --type cert --id "$keyid" -o /dev/stdout 2>/dev/null || true; } | sha1sum | cut -d' ' -f1)
	if [ "$onboard" != "$(sha1sum <"$d/cert.der" | cut -d' ' -f1)" ]; then
		p11 --login --pin env:TOKEN_PIN --delete-object --type cert --id "$keyid" >/dev/null 2>&1 || true
		p11 --login --pin env:TOKEN_PIN --write-object "$d/cert.der" --type cert --id "$keyid" --label "$keylabel" \
			>>"$d/pki.log" 2>&1 || { show_log pki "$d/pki.log"; die "writing the certificate on token $label failed"; }
	fi
}

# pki_signer ID: an extra test signer (lab only; its key is a software key in
# $BASE/signers/ID/key.pem, which tests use to sign what the lab's providers never would):
# a certificate from CA1 with the provider profile for P_NAME[ID] and P_SERVICE[ID].
pki_signer() {
	local id=$1 d=$BASE/signers/$1 ca=$BASE/ca
	mkdir -p "$d"
	if [ ! -s "$d/cert.pem" ] || ! openssl x509 -in "$d/cert.pem" -noout -checkend 86400 >/dev/null; then
		(
			set -e
			umask 077
			openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$d/key.pem"
			cat >"$d/cert.ext" <<-EXT
				[provider]
				keyUsage = critical,digitalSignature
				extendedKeyUsage = emailProtection
				subjectAltName = email:${P_SERVICE[$id]}
				subjectKeyIdentifier = hash
				authorityKeyIdentifier = keyid:always
			EXT
			openssl req -new -key "$d/key.pem" -subj "/C=IT/O=${P_NAME[$id]}/CN=Posta Certificata ${P_NAME[$id]}" -out "$d/cert.csr"
			openssl x509 -req -in "$d/cert.csr" -CA "$ca/ca1.pem" -CAkey "$ca/ca1.key" \
				-set_serial "0x$(openssl rand -hex 8)" -days 825 -sha256 \
				-extfile "$d/cert.ext" -extensions provider -out "$d/cert.pem"
			chmod 644 "$d/cert.pem"
		) >>"$d/pki.log" 2>&1 || { show_log pki "$d/pki.log"; die "test signer $id failed"; }
	fi
	openssl x509 -in "$d/cert.pem" -outform DER -out "$d/cert.der"
	cat "$d/cert.pem" "$ca/ca1.pem" >"$d/cert-chain.pem"
}

# pki_crl CERT...: the CRL CA1 publishes ($BASE/ca/crl/ca1.crl, PEM, 30 days; trust.crls of
# pec.yaml), revoking each CERT for keyCompromise. Rebuilt on every run.
pki_crl() {
	local d=$BASE/ca/crl ca=$BASE/ca c
	mkdir -p "$d"
	: >"$d/index.txt"
	[ -s "$d/crlnumber" ] || echo 1000 >"$d/crlnumber"
	cat >"$d/ca.cnf" <<-CNF
		[ca]
		default_ca = ca1
		[ca1]
		database = $d/index.txt
		crlnumber = $d/crlnumber
		certificate = $ca/ca1.pem
		private_key = $ca/ca1.key
		default_md = sha256
		default_crl_days = 30
		crl_extensions = crl_ext
		[crl_ext]
		authorityKeyIdentifier = keyid:always
	CNF
	(
		set -e
		for c in "$@"; do openssl ca -config "$d/ca.cnf" -revoke "$c" -crl_reason keyCompromise; done
		openssl ca -config "$d/ca.cnf" -gencrl -out "$d/ca1.crl.new"
		mv -f "$d/ca1.crl.new" "$d/ca1.crl"
	) >>"$d/crl.log" 2>&1 || { show_log crl "$d/crl.log"; die "CA1's CRL failed"; }
}

# cert_sha1 FILE.der: upper-case hex SHA-1 of a DER certificate (providerCertificateHash).
cert_sha1() {
	sha1sum <"$1" | cut -d' ' -f1 | tr 'a-f' 'A-F'
}

# cert_der ID: the DER certificate of a provider or of an extra test signer.
cert_der() {
	if [ -f "$BASE/signers/$1/cert.der" ]; then echo "$BASE/signers/$1/cert.der"; else echo "$BASE/$1/cert.der"; fi
}

# pki_ldif OUT ID...: the providers index (pec-spec §9.1) with the real certificates.
pki_ldif() {
	local out=$1 id
	shift
	{
		cat <<-EOF
			# PEC providers index of the lab (RFC 6109 §4.5), generated by lab-up.sh.
			dn: o=postacert
			objectClass: top
			objectClass: organization
			objectClass: LDIFLocationURLObject
			o: postacert
			description: PEC lab providers index (test only)
		EOF
		for id in "$@"; do
			local ders=("$(cert_der "$id")") x
			for x in ${P_EXTRA[$id]}; do ders+=("$(extra_dir "$id" "$x")/cert.der"); done
			printf '\ndn: providerName=%s,o=postacert\nobjectClass: top\nobjectClass: provider\nproviderName: %s\n' \
				"${P_NAME[$id]}" "${P_NAME[$id]}"
			for x in "${ders[@]}"; do printf 'providerCertificateHash: %s\n' "$(cert_sha1 "$x")"; done
			for x in "${ders[@]}"; do printf 'providerCertificate;binary:: %s\n' "$(base64 -w0 <"$x")"; done
			printf 'mailReceipt: %s\n' "${P_RECEIPT[$id]}"
			for x in $(all_domains "$id"); do printf 'managedDomains: %s\n' "$x"; done
			printf 'description: Lab PEC provider %s\n' "$id"
		done
	} >"$out.new"
	mv -f "$out.new" "$out"
}
