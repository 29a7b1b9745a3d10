#!/usr/bin/env bash
# install-packages.sh: install, without prompts, every Debian 12 package the PEC lab needs, and
# the vmail user Dovecot stores mail as. Run as root. When everything is already there it exits
# at once (dpkg-query), so warm CI runs pay nothing.
#
# No maintainer script may start a service: without systemd, invoke-rc.d would run the SysV
# scripts and start a system-wide Postfix, Dovecot, slapd and clamd on the ports the lab wants.
# So a policy-rc.d that exits 101 is put in place for the install (and removed afterwards when
# this script created it). Postfix is preseeded to "No configuration" and slapd to
# no_configuration: the lab writes its own private configurations and never touches /etc.
#
# Go itself is not installed here (the project pins Go 1.26, which Debian 12 does not ship);
# gcc and libc6-dev are, because PKCS#11 and SQLite need cgo.
#
# Usage: install-packages.sh [lab|node|containers]
#   lab (default)  everything the lab and the integration tests need on this machine
#   node           what the container image of docker/Dockerfile runs: the lab's daemons without
#                  the compiler, PostgreSQL and the test clients; tini as PID 1
#   containers     what `make containers` needs on the host to build and run that image with
#                  podman (docker/podman-test.sh): podman, podman-compose, runc, debootstrap,
#                  netavark + aardvark-dns (the bridge network and its service names: without
#                  them podman falls back to CNI, which resolves no names) and iptables (netavark
#                  publishes ports with it); jq, openssl and xmllint check what arrives (Go 1.26
#                  itself, as for the lab, is not a Debian package)
set -euo pipefail

PKGS=(
	postfix dovecot-core dovecot-imapd dovecot-lmtpd
	slapd ldap-utils
	softhsm2 opensc
	clamav clamav-daemon
	libxml2-utils openssl ca-certificates
	swaks libnet-ssleay-perl
	iproute2 procps util-linux bsdutils
	postgresql postgresql-client
	curl sqlite3 jq
	gcc libc6-dev
)
profile=${1:-lab}
case $profile in
lab) ;;
node)
	PKGS=(
		postfix dovecot-core dovecot-imapd dovecot-lmtpd
		slapd ldap-utils
		softhsm2 opensc
		clamav-daemon
		openssl ca-certificates
		iproute2 procps util-linux bsdutils
		curl jq tini
	)
	;;
containers) PKGS=(podman podman-compose runc debootstrap netavark aardvark-dns iptables jq openssl libxml2-utils) ;;
*)
	echo "install-packages.sh: unknown profile $profile (lab, node or containers)" >&2
	exit 2
	;;
esac

[ "$(id -u)" = 0 ] || { echo "install-packages.sh: run as root" >&2; exit 1; }

# One dpkg-query for all of them: "name ii " for each installed package.
installed=$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${PKGS[@]}" 2>/dev/null || true)
missing=()
for p in "${PKGS[@]}"; do
	grep -qx "$p ii *" <<<"$installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
	echo "install-packages.sh: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
	created_policy=0
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\n# installed by install-packages.sh: no service starts during install\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod +x /usr/sbin/policy-rc.d
		created_policy=1
	fi
	trap '[ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
	apt=(apt-get -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
	"${apt[@]}" update -qq
	"${apt[@]}" install -y -qq --no-install-recommends "${PKGS[@]}"
fi

if [ "$profile" != containers ] && ! id vmail >/dev/null 2>&1; then
	useradd --system --user-group --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin vmail
fi
