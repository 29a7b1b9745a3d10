#!/usr/bin/env bash
# softhsm-token.sh DIR LABEL [KEY_LABEL KEY_ID_HEX]
#
# Initialise a SoftHSM2 token labelled LABEL with user PIN $TOKEN_PIN in a private SoftHSM2
# installation under DIR (DIR/softhsm2.conf, tokens in DIR/tokens), and optionally generate an
# RSA-2048 signing key pair ON the token (label KEY_LABEL, CKA_ID KEY_ID_HEX; the private key is
# sensitive and never extractable). Idempotent: an existing token or key with that label is kept.
#
# PINs never appear on a command line (ps shows command lines to every user; issue 12 item
# 10): the user PIN comes from the environment variable TOKEN_PIN (required), the SO PIN from
# $SO_PIN when set, else a random one stored in DIR/LABEL.so-pin (mode 0600); pkcs11-tool reads
# both with its "env:VARIABLE" form. softhsm2-util only takes PINs as arguments or from a
# terminal, so it is used for nothing that needs one.
# On success it prints one line, SOFTHSM2_CONF=DIR/softhsm2.conf, for `eval` or `export`:
#
#   eval "$(TOKEN_PIN=1234 integration/scripts/softhsm-token.sh "$dir" provider-x provider-x 01)"
#   export SOFTHSM2_CONF   # the Go process needs it too
#
# Find the token by LABEL, never by slot number: SoftHSM2 renumbers slots on --init-token.
# Tests that remove or break a token must use their own DIR (t.TempDir()), never the lab's.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ $# -eq 2 ] || [ $# -eq 4 ] || die "usage: TOKEN_PIN=... softhsm-token.sh DIR LABEL [KEY_LABEL KEY_ID_HEX]"
[ -n "${TOKEN_PIN:-}" ] || die "softhsm-token.sh: the user PIN goes in the environment variable TOKEN_PIN"
export TOKEN_PIN
dir=$1 label=$2 keylabel=${3:-} keyid=${4:-}
need softhsm2-util pkcs11-tool
module=${SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
[ -f "$module" ] || die "SoftHSM2 module $module not found"

mkdir -p "$dir/tokens"
dir=$(cd "$dir" && pwd)
conf=$dir/softhsm2.conf
if [ ! -f "$conf" ]; then
	cat >"$conf" <<CONF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
fi
export SOFTHSM2_CONF=$conf

p11() { pkcs11-tool --module "$module" "$@"; }
if ! softhsm2-util --show-slots 2>/dev/null | grep -qE "^[[:space:]]*Label:[[:space:]]+$label[[:space:]]*\$"; then
	TOKEN_SO_PIN=${SO_PIN:-}
	if [ -z "$TOKEN_SO_PIN" ]; then
		TOKEN_SO_PIN=$(randpin)
		(umask 077 && printf '%s\n' "$TOKEN_SO_PIN" >"$dir/$label.so-pin")
	fi
	export TOKEN_SO_PIN
	# The slot of SoftHSM2's one uninitialised token, named explicitly: pkcs11-tool
	# --init-token without --slot takes the first slot with a token, which may be an
	# initialised one (its keys would be lost).
	free=$(softhsm2-util --show-slots | awk '/^Slot [0-9]+/ {s = $2} /Initialized:[[:space:]]+no/ {print s; exit}')
	[ -n "$free" ] || die "SoftHSM2 under $dir has no free slot"
	p11 --slot "$free" --init-token --label "$label" --so-pin env:TOKEN_SO_PIN >/dev/null 2>&1 ||
		die "pkcs11-tool --init-token $label failed"
	p11 --token-label "$label" --login --login-type so --so-pin env:TOKEN_SO_PIN --init-pin --new-pin env:TOKEN_PIN >/dev/null 2>&1 ||
		die "pkcs11-tool --init-pin on token $label failed"
fi

if [ -n "$keylabel" ]; then
	if ! p11 --token-label "$label" --login --pin env:TOKEN_PIN --list-objects --type privkey 2>/dev/null | grep -qE "label:[[:space:]]+$keylabel\$"; then
		p11 --token-label "$label" --login --pin env:TOKEN_PIN --keypairgen --key-type rsa:2048 --usage-sign --label "$keylabel" --id "$keyid" >/dev/null 2>&1 ||
			die "key generation on token $label failed"
	fi
fi
printf 'SOFTHSM2_CONF=%s\n' "$conf"
