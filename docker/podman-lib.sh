# shellcheck shell=bash
# The steps of docker/podman-test.sh (make containers). Sourced; defines functions only.
# Expects REPO, CT_HOME, PROJECT, BASE_IMAGE, COMPOSE, SERVICES, PEC_CT_NET and (during a run)
# STATE, a temporary directory removed at the end.
. "$REPO/integration/scripts/lib.sh"

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
ctr() { printf '%s_%s_1' "$PROJECT" "$1"; } # podman-compose's container names

# step NAME CMD...: run one step; its time goes into the summary. A failure ends the run (set -e):
# finish (the EXIT trap) names the step.
TIMES=() CURRENT=""
step() {
	local name=$1 t
	shift
	t=$(now)
	CURRENT=$name
	say "== $name"
	"$@"
	TIMES+=("$name $(secs "$t" "$(now)")")
	CURRENT=""
}

# write_conf: podman's private configuration (the recipe: runc, ulimits within the hard limits).
write_conf() {
	local h
	h=$(ulimit -Hn)
	[ "$h" = unlimited ] && h=1048576
	cat >"$CONTAINERS_CONF" <<-EOF
		# Written by docker/podman-test.sh; used through CONTAINERS_CONF only (nothing under /etc).
		[containers]
		# podman asks for nofile=1048576 by default, above this host's hard limit
		default_ulimits = ["nofile=$h:$h", "nproc=32768:32768"]
		[engine]
		# crun refuses this machine's hybrid cgroups ("cgroups in hybrid mode not supported")
		runtime = "runc"
		helper_binaries_dir = ["/usr/lib/podman", "/usr/libexec/podman"]
		[network]
		# netavark + aardvark-dns: the services find each other by name
		network_backend = "netavark"
	EOF
}

# record_host: what the first bridge network changes on the host, to restore it afterwards.
record_host() {
	FWD_BEFORE=$(sysctl -n net.ipv4.ip_forward)
	NETAVARK_BEFORE=0
	iptables-save 2>/dev/null | grep -q NETAVARK && NETAVARK_BEFORE=1
	return 0
}

# restore_host: ip_forward and netavark's leftover chains, when this run introduced them and no
# other container runs.
restore_host() {
	[ -n "${FWD_BEFORE:-}" ] || return 0
	[ -z "$(podman ps -q 2>/dev/null)" ] || { say "other containers run: host firewall and ip_forward left as they are"; return 0; }
	[ "$(sysctl -n net.ipv4.ip_forward)" = "$FWD_BEFORE" ] || sysctl -qw "net.ipv4.ip_forward=$FWD_BEFORE"
	[ "$NETAVARK_BEFORE" = 0 ] || return 0
	local t rule c
	for t in filter nat; do
		while IFS= read -r rule; do
			eval "iptables -t $t ${rule/#-A/-D}" || true
		done < <(iptables-save -t "$t" 2>/dev/null | grep -E '^-A (PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) .*NETAVARK')
		for c in $(iptables-save -t "$t" 2>/dev/null | sed -n 's/^:\(NETAVARK[^ ]*\) .*/\1/p'); do
			iptables -t "$t" -F "$c" || true
		done
		for c in $(iptables-save -t "$t" 2>/dev/null | sed -n 's/^:\(NETAVARK[^ ]*\) .*/\1/p'); do
			iptables -t "$t" -X "$c" || true
		done
	done
}

# debian_mirror: the Debian mirror apt already uses (deb822 .sources first, then sources.list).
debian_mirror() {
	local m
	m=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
	[ -n "$m" ] || m=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
	printf '%s' "${m:-http://deb.debian.org/debian}"
}

# base_image: Debian bookworm minbase, made once with debootstrap and imported (no registry).
base_image() {
	if podman image exists "$BASE_IMAGE"; then
		say "$BASE_IMAGE: cached"
		return 0
	fi
	local mirror root=$CT_HOME/rootfs
	mirror=$(debian_mirror)
	rm -rf "$root"
	say "debootstrap --variant=minbase bookworm from $mirror"
	debootstrap --variant=minbase bookworm "$root" "$mirror" >"$STATE/debootstrap.log" 2>&1 ||
		{ tail -n 20 "$STATE/debootstrap.log" >&2; rm -rf "$root"; return 1; }
	# Point releases and security updates, as in Debian's own images.
	cat >"$root/etc/apt/sources.list" <<-EOF
		deb $mirror bookworm main
		deb $mirror bookworm-updates main
		deb ${mirror%/debian}/debian-security bookworm-security main
	EOF
	rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
	tar -C "$root" -c . | podman import --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
	rm -rf "$root"
	podman image exists "$BASE_IMAGE"
}

# build_image: the compose file's build section (podman-compose builds it for the first service;
# the others share the image). The host's CA bundle goes in as a build secret, for the HTTPS
# downloads of the Go toolchain and modules behind a TLS-intercepting proxy.
build_image() {
	local extra=()
	[ -s /etc/ssl/certs/ca-certificates.crt ] &&
		extra=("--podman-build-args=--secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt")
	"${COMPOSE[@]}" "${extra[@]}" build setup >"$STATE/build.log" 2>&1 ||
		{ tail -n 40 "$STATE/build.log" >&2; return 1; }
	say "   $(grep -c -- '--> Using cache' "$STATE/build.log" || true) of $(grep -c 'STEP [0-9]*/' "$STATE/build.log" || true) build steps from the cache"
	podman image exists gestore-pec/node:dev
}

up() {
	"${COMPOSE[@]}" up -d >"$STATE/up.log" 2>&1 || { tail -n 40 "$STATE/up.log" >&2; return 1; }
}

# state SERVICE: "running", "exited 0", ... of its container.
state() {
	podman inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$(ctr "$1")" 2>/dev/null || echo missing
}

show_container() {
	say "---- $1: $(state "$1"); last lines of its log ----"
	podman logs --tail 40 "$(ctr "$1")" 2>&1 | sed 's/^/    /' >&2 || true
}

# ---- probes: podman-compose up -d exits 0 even when a container fails ------------------------
# wait_setup_done: the one-shot setup must exit 0.
wait_setup_done() {
	local i s
	for i in $(seq 1 900); do
		s=$(state setup)
		case $s in
		"exited 0") return 0 ;;
		exited* | missing) show_container setup; return 1 ;;
		esac
		sleep 1
	done
	show_container setup
	return 1
}

# wait_healthy SERVICE SECONDS: the compose healthcheck (node.sh health) passes in the container
# while it keeps running.
wait_healthy() {
	local svc=$1 i
	for i in $(seq 1 "$2"); do
		[ "$(state "$svc")" = "running 0" ] || { show_container "$svc"; return 1; }
		podman healthcheck run "$(ctr "$svc")" >/dev/null 2>&1 && return 0
		sleep 1
	done
	say "$svc: not healthy within $2 s"
	show_container "$svc"
	return 1
}

# banner HOST PORT PREFIX: the server's first line, read through the published port.
banner() {
	(
		exec 3<>"/dev/tcp/$1/$2" || exit 1
		IFS= read -r -t 10 line <&3 || exit 1
		case $3 in 220*) printf 'QUIT\r\n' >&3 ;; *) printf 'a LOGOUT\r\n' >&3 ;; esac
		[[ $line == "$3"* ]]
	)
}

clamd_pong() {
	(
		exec 3<>"/dev/tcp/$1/$2" || exit 1
		printf 'zPING\0' >&3
		IFS= read -r -d '' -t 10 reply <&3 || true
		[ "$reply" = PONG ]
	)
}

# probe_all: setup finished, every service healthy inside, and answering on its published ports.
probe_all() {
	local svc n=$PEC_CT_NET fail=0 p
	wait_setup_done
	say "   setup          exited 0"
	for svc in index clamd mail-o provider-a provider-b; do
		wait_healthy "$svc" 300 || return 1
		say "   $(printf '%-14s' "$svc") healthy"
	done
	for p in "index $n.1 3890 tcp" "clamd $n.1 3310 clamd" \
		"provider-a $n.10 25 220" "provider-a $n.10 587 220" "provider-a $n.10 143 *_OK" "provider-a $n.10 9100 readyz" \
		"provider-b $n.20 25 220" "provider-b $n.20 587 220" "provider-b $n.20 143 *_OK" "provider-b $n.20 9100 readyz" \
		"mail-o $n.30 25 220" "mail-o $n.30 587 220" "mail-o $n.30 143 *_OK"; do
		read -r svc host port kind <<<"$p"
		case $kind in
		tcp) tcp_open "$host" "$port" ;;
		clamd) clamd_pong "$host" "$port" ;;
		readyz) curl -fsS -o /dev/null --max-time 5 "http://$host:$port/readyz" ;;
		*) banner "$host" "$port" "${kind/_/ }" ;;
		esac && say "   $(printf '%-14s' "$svc") $host:$port answers ($kind)" ||
			{ say "   $svc $host:$port: NO ANSWER ($kind)"; fail=1; }
	done
	[ "$fail" = 0 ]
}

# ---- the PEC -----------------------------------------------------------------------------------
# fetch_description: lab.json (integration/lab schema) for integration/containers, with the
# published addresses and the CA, TLS certificates and mailbox passwords copied out of the
# containers. The names and domains come from the lab's own topology.
fetch_description() {
	local id addr pw users c ip n=$PEC_CT_NET lmtpd providers=""
	# shellcheck source=../integration/scripts/lab-topology.sh
	PEC_LAB=$STATE . "$REPO/integration/scripts/lab-topology.sh"
	podman cp "$(ctr provider-a):/lab/ca/root.pem" "$STATE/ca.pem"
	for id in a b; do
		c=$(ctr "provider-$id")
		podman cp "$c:/lab/$id/tls/cert.pem" "$STATE/$id-tls.pem"
		podman cp "$c:/lab/$id/dovecot/users" "$STATE/$id-users"
		users=$(while IFS=: read -r addr pw _; do
			jq -n --arg a "$addr" --arg p "${pw#\{PLAIN\}}" '{address: $a, password: $p}'
		done <"$STATE/$id-users" | jq -s .)
		lmtpd=""
		podman exec "$c" test -f "/lab/$id/run/pec-lmtpd.pid" && lmtpd="unix:/lab/$id/run/lmtp.sock"
		ip=$n.$([ "$id" = a ] && echo 10 || echo 20)
		providers+="${providers:+,}$(jq -n --arg id "$id" --arg name "${P_NAME[$id]}" --arg ip "$ip" \
			--arg dom "${P_DOMAIN[$id]}" --arg svc "${P_SERVICE[$id]}" --arg rcpt "${P_RECEIPT[$id]}" \
			--arg tls "$STATE/$id-tls.pem" --arg lmtpd "$lmtpd" --argjson users "$users" \
			'{id: $id, name: $name, ip: $ip, domain: $dom, service_address: $svc, receipt_address: $rcpt,
			  postfix: {mx: ($ip + ":25"), submission: ($ip + ":587"), tls_cert: $tls},
			  dovecot: {imap: ($ip + ":143")}, lmtpd: $lmtpd, users: $users}')"
	done
	jq -n --arg base "$STATE" --arg ca "$STATE/ca.pem" --argjson providers "[$providers]" \
		'{base: $base, wiring: "pec", ca: {cert: $ca}, providers: $providers}' >"$STATE/lab.json"
	chmod 600 "$STATE/lab.json"
}

# check_pec: integration/containers, with pecctl built from this tree (pecctl verify).
check_pec() {
	(
		cd "$REPO"
		export GOTOOLCHAIN=local
		go build -o "$STATE/pecctl" ./cmd/pecctl
		PEC_LAB=$STATE PECCTL=$STATE/pecctl go run ./integration/containers
	)
}

# ---- down --------------------------------------------------------------------------------------
# teardown: SIGTERM every node (each must exit 0: its daemons stopped in order), then remove the
# containers, the project's volumes and network, and restore the host.
teardown() {
	local svc s bad=0 v
	if [ -n "$(podman ps -aq --filter "label=io.podman.compose.project=$PROJECT" 2>/dev/null)" ]; then
		"${COMPOSE[@]}" stop -t 30 >"${STATE:-/tmp}/stop.log" 2>&1 || true
		for svc in "${SERVICES[@]}"; do
			s=$(state "$svc")
			case $s in
			"exited 0" | missing) ;;
			*) say "   $svc stopped as: $s"; [ "${QUIET_DOWN:-0}" = 1 ] || show_container "$svc"; bad=1 ;;
			esac
		done
		"${COMPOSE[@]}" down -t 5 >"${STATE:-/tmp}/down.log" 2>&1 || true
		podman rm -f -t 5 $(podman ps -aq --filter "label=io.podman.compose.project=$PROJECT") >/dev/null 2>&1 || true
	fi
	for v in $(podman volume ls -q --filter "label=io.podman.compose.project=$PROJECT" 2>/dev/null); do
		podman volume rm -f "$v" >/dev/null
	done
	podman network exists "${PROJECT}_default" 2>/dev/null && podman network rm -f "${PROJECT}_default" >/dev/null
	restore_host
	[ "$bad" = 0 ] || { say "some node did not stop cleanly on SIGTERM"; return 1; }
	leftovers
}

# leftovers: nothing of the project may remain (images and the base image are the cache).
leftovers() {
	local left
	left=$(
		podman ps -aq --filter "label=io.podman.compose.project=$PROJECT"
		podman volume ls -q --filter "label=io.podman.compose.project=$PROJECT"
		podman network ls -q --filter "name=^${PROJECT}_" 2>/dev/null
	)
	[ -z "$left" ] || { say "left behind: $left"; return 1; }
	say "   nothing left: no container, volume or network of $PROJECT; ip_forward=$(sysctl -n net.ipv4.ip_forward)"
}

# clean_cache: the image, its build layers, the base image and buildah's cache mounts (the Go
# module and build caches of the Dockerfile).
clean_cache() {
	podman image rm -f gestore-pec/node:dev "$BASE_IMAGE" >/dev/null 2>&1 || true
	podman image prune -f >/dev/null
	rm -rf /var/tmp/buildah-cache "$CT_HOME/rootfs"
	say "removed the images, the base image and the build caches"
}

finish() {
	local rc=$1 t
	set +e
	trap - EXIT
	[ "$rc" = 0 ] || say "containers: step '${CURRENT:-?}' failed"
	if [ "${KEEP:-0}" = 1 ]; then
		say "left running (PEC_CT_KEEP=1); lab.json: $STATE/lab.json; remove with: docker/podman-test.sh down"
	else
		[ "${DOWN_DONE:-0}" = 1 ] || QUIET_DOWN=1 teardown >/dev/null
		rm -rf "$STATE"
	fi
	printf '\ncontainers: %s in %ss;' "$([ "$rc" = 0 ] && echo PASS || echo FAILED)" "$(secs "$T0" "$(now)")"
	for t in "${TIMES[@]}"; do printf ' %ss' "$t"; done
	printf '\n'
	exit "$rc"
}
