#!/usr/bin/env bash
# softhsm-token.sh DIR LABEL PIN [KEY_LABEL KEY_ID_HEX]
#
# Initialise a SoftHSM2 token labelled LABEL with user PIN PIN in a private SoftHSM2
# installation under DIR (DIR/softhsm2.conf, tokens in DIR/tokens), and optionally generate an
# RSA-2048 signing key pair ON the token (label KEY_LABEL, CKA_ID KEY_ID_HEX; the private key is
# sensitive and never extractable). Idempotent: an existing token or key with that label is kept.
#
# The SO PIN is $SO_PIN when set, else a random one stored in DIR/LABEL.so-pin (mode 0600).
# On success it prints one line, SOFTHSM2_CONF=DIR/softhsm2.conf, for `eval` or `export`:
#
#   eval "$(integration/scripts/softhsm-token.sh "$dir" provider-x 1234 provider-x 01)"
#   export SOFTHSM2_CONF   # the Go process needs it too
#
# Find the token by LABEL, never by slot number: SoftHSM2 renumbers slots on --init-token.
# Tests that remove or break a token must use their own DIR (t.TempDir()), never the lab's.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ $# -eq 3 ] || [ $# -eq 5 ] || die "usage: softhsm-token.sh DIR LABEL PIN [KEY_LABEL KEY_ID_HEX]"
dir=$1 label=$2 pin=$3 keylabel=${4:-} keyid=${5:-}
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

if ! softhsm2-util --show-slots 2>/dev/null | grep -qE "^[[:space:]]*Label:[[:space:]]+$label[[:space:]]*\$"; then
	sopin=${SO_PIN:-}
	if [ -z "$sopin" ]; then
		sopin=$(randpin)
		(umask 077 && printf '%s\n' "$sopin" >"$dir/$label.so-pin")
	fi
	softhsm2-util --init-token --free --label "$label" --so-pin "$sopin" --pin "$pin" >/dev/null ||
		die "softhsm2-util --init-token $label failed"
fi

if [ -n "$keylabel" ]; then
	p11() { pkcs11-tool --module "$module" --token-label "$label" --login --pin "$pin" "$@"; }
	if ! p11 --list-objects --type privkey 2>/dev/null | grep -qE "label:[[:space:]]+$keylabel\$"; then
		p11 --keypairgen --key-type rsa:2048 --usage-sign --label "$keylabel" --id "$keyid" >/dev/null 2>&1 ||
			die "key generation on token $label failed"
	fi
fi
printf 'SOFTHSM2_CONF=%s\n' "$conf"
