# shellcheck shell=bash
# Issue 18: provider A on more than one node. Sourced by lab-topology.sh (after the topology).
#
#   PEC_A_NODES=1|2   2: provider A gets a second node, a2, on $NET.11: its own Postfix instance
#                     (configured from the same postfix-conf/ files), pec-milter (with its
#                     confirmation listener and outbox drainer) and pec-lmtpd, sharing with the
#                     first node A's store (PostgreSQL: PEC_STORE=postgres is required), A's
#                     Dovecot (the mailboxes are shared storage in a real provider: both nodes
#                     deliver and authenticate there), A's token and certificate, hence A's
#                     entry in the providers index. Both nodes take submissions (:587) and MX
#                     traffic (:25); the other mail systems route to A through both (mx_routes).
#
# A node has its own directory $BASE/<node> (postfix/, run/, logs/, tls/, pec.yaml) and the
# same shape as a provider's, so the functions of lab-mail.sh and lab-topology.sh take a node
# id where they take a provider id; prov NODE names the provider it belongs to.

A_NODES=${PEC_A_NODES:-1}
KNOWN_NODES=(a2) # every extra node the lab can run: lab-down.sh stops them whatever PEC_A_NODES says
NODE_IDS=()      # the extra nodes of this run
declare -A NODE_OF=([a2]=a)
P_IP[a2]=$NET.11
P_NAME[a2]=${P_NAME[a]} P_DOMAIN[a2]=${P_DOMAIN[a]} P_EXTRA[a2]=${P_EXTRA[a]}
P_SERVICE[a2]=${P_SERVICE[a]} P_RECEIPT[a2]=${P_RECEIPT[a]}
case $A_NODES in
1) ;;
2) NODE_IDS=(a2) ;;
*) die "PEC_A_NODES must be 1 or 2, not $A_NODES" ;;
esac

# prov ID: the provider a node belongs to (a provider is its own first node).
prov() { printf '%s' "${NODE_OF[$1]:-$1}"; }

# nodes_of PROVIDER: its nodes in this run, itself first.
nodes_of() {
	local n out=$1
	for n in "${NODE_IDS[@]}"; do [ "${NODE_OF[$n]}" = "$1" ] && out+=" $n"; done
	printf '%s' "$out"
}

# node_name ID: pec.yaml's node: when the provider has several nodes (a1, a2: each process
# sharing a store needs its own name for leases and identificativi); empty for a lone node.
node_name() {
	local p
	p=$(prov "$1")
	[ "$(nodes_of "$p")" = "$p" ] && return 0
	if [ "$1" = "$p" ]; then printf '%s1' "$p"; else printf '%s' "$1"; fi
}

node_yaml() {
	local n
	n=$(node_name "$1")
	if [ -n "$n" ]; then echo "node: $n"; else echo "# node: the host name (one node)"; fi
}

# mx_routes OTHER: a transport_maps table routing the domains of mail system OTHER to its MX
# nodes, or nothing when it has one node (ROUTES of postfix_configure has it then). Each
# domain has its own first node (domain i the node i modulo their number) and lists the others
# after it: a nexthop list (Postfix >= 3.5) is tried in order, so a node that is down is
# skipped to the next, as with MX records of increasing preference. Per domain, not at random:
# Postfix resolves the transport per recipient, and a random pick per lookup (randmap) would
# split one message to two of A's users into two SMTP transactions, each with its own presa in
# carico (RFC 6109 §3.2.1), where MX records (looked up per domain) give one.
mx_routes() {
	local other=$1 nodes n x list entries="" i=0 k
	read -r -a nodes <<<"$(nodes_of "$other")"
	[ ${#nodes[@]} -gt 1 ] || return 0
	for x in $(all_domains "$other"); do
		list=""
		for k in $(seq 0 $((${#nodes[@]} - 1))); do
			n=${nodes[$(((i + k) % ${#nodes[@]}))]}
			list+="${list:+, }[${P_IP[$n]}]:25"
		done
		entries+="${entries:+, }{$x=smtp:$list}"
		i=$((i + 1))
	done
	printf 'inline:{%s}' "$entries"
}

# nodes_stop_unused: stop the extra nodes this run does not have (a lab brought up with
# PEC_A_NODES=2, then again with 1).
nodes_stop_unused() {
	local n
	for n in "${KNOWN_NODES[@]}"; do
		[[ " ${NODE_IDS[*]} " == *" $n "* ]] && continue
		node_stop "$n"
	done
}

node_stop() {
	[ -d "$BASE/$1" ] || return 0
	postfix_stop "$1"
	pec_process_stop "$1" pec-milter
	pec_process_stop "$1" pec-lmtpd
}

# node_json ID: one node of a provider for lab.json (integration/lab Node).
node_json() {
	local id=$1 ip=${P_IP[$1]}
	jq -n --arg id "$id" --arg name "$(node_name "$id")" --arg ip "$ip" \
		--arg pfetc "$BASE/$id/postfix/etc" --arg pflog "$BASE/$id/postfix/maillog" \
		--arg reinject "unix:$(reinject_socket "$id")" --arg run "$BASE/$id/run" \
		--arg milter "$BASE/$id/run/milter.sock" --arg lmtpd "unix:$BASE/$id/run/lmtp.sock" \
		--arg metrics "http://$ip:9100" --arg lmtpdm "http://$ip:$LMTPD_METRICS_PORT" \
		--arg yaml "$BASE/$id/pec.yaml" --arg tls "$BASE/$id/tls/cert.pem" --arg mlog "$BASE/$id/logs/pec-milter.log" --arg llog "$BASE/$id/logs/pec-lmtpd.log" \
		'{id: $id, name: $name, ip: $ip, run_dir: $run, config_file: $yaml,
		  postfix: {config_dir: $pfetc, mx: ($ip + ":25"), submission: ($ip + ":587"), reinject: $reinject, maillog: $pflog, tls_cert: $tls},
		  milter_socket: $milter, lmtpd: $lmtpd, metrics: $metrics, lmtpd_metrics: $lmtpdm,
		  logs: {postfix: $pflog, "pec-milter": $mlog, "pec-lmtpd": $llog}}'
}

# nodes_json PROVIDER: the JSON array of its nodes (only with PEC wiring and pec-lmtpd).
nodes_json() {
	local n out=""
	if is_pec "$1" && [ "$PEC_WIRING" = pec ] && [ "$USE_LMTPD" = 1 ]; then
		for n in $(nodes_of "$1"); do out+="${out:+,}$(node_json "$n")"; done
	fi
	printf '[%s]' "$out"
}

# nodes_summary: lab-up's summary lines of the extra nodes.
nodes_summary() {
	local n
	for n in "${NODE_IDS[@]}"; do
		printf '  %s  node %s of provider %s  %s: postfix MX :25  submission :587  config %s\n' \
			"$n" "$(node_name "$n")" "$(prov "$n")" "${P_IP[$n]}" "$BASE/$n/postfix/etc"
		printf '       pec-milter unix:%s  pec-lmtpd %s  pec.yaml %s  logs %s\n' \
			"$BASE/$n/run/milter.sock" "$BASE/$n/run/lmtp.sock" "$BASE/$n/pec.yaml" "$BASE/$n/logs"
	done
}
