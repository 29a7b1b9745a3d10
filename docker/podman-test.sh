#!/usr/bin/env bash
# podman-test.sh (make containers): build docker/Dockerfile and run docker/compose.yaml for real
# with podman on this Debian 12 machine (no Docker engine, no registry), send one PEC from
# alice@pec-a.test to bruno@pec-b.test through the containers, check what arrives
# (integration/containers), then remove everything it started. Exit status 0 only when every
# step passed; the timings are printed either way.
#
#   1. install podman, podman-compose, runc, debootstrap (install-packages.sh containers)
#   2. the base image localhost/debian:bookworm from debootstrap --variant=minbase (once, cached)
#   3. the image gestore-pec/node:dev with podman-compose build (layers and Go caches cached)
#   4. podman-compose up -d, then probe every service (it exits 0 even when a container fails)
#   5. the PEC, checked over the published ports
#   6. stop (SIGTERM: each node must exit 0), down, remove the volumes and the network; restore
#      net.ipv4.ip_forward and drop netavark's firewall chains when this run created them
#
# Podman runs with a private containers.conf (CONTAINERS_CONF): runc (crun refuses this
# machine's hybrid cgroups), ulimits within the host's hard limits, netavark. Nothing under /etc
# changes. Ports are published on $PEC_CT_NET.x (default 127.0.20.x; the labs use 127.0.0-12.x).
#
#   PEC_CT_HOME   containers.conf and the lock (default /var/tmp/gestore-containers)
#   PEC_CT_KEEP=1 leave the network running at the end (then: docker/podman-test.sh down)
#
#   docker/podman-test.sh down    remove what a kept run left (containers, volumes, network)
#   docker/podman-test.sh clean   also the cache: the images, the base image, the Go caches
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CT_HOME=${PEC_CT_HOME:-/var/tmp/gestore-containers}
PROJECT=gestore-pec
BASE_IMAGE=localhost/debian:bookworm
export PEC_CT_NET=${PEC_CT_NET:-127.0.20} PEC_DEBIAN_IMAGE=$BASE_IMAGE
export CONTAINERS_CONF=$CT_HOME/containers.conf
COMPOSE=(podman-compose -p "$PROJECT" -f "$REPO/docker/compose.yaml")
SERVICES=(setup index clamd provider-a provider-b mail-o)
. "$REPO/docker/podman-lib.sh"

[ "$(id -u)" = 0 ] || die "run as root (podman rootful, apt)"
mkdir -p "$CT_HOME"
exec 8>"$CT_HOME/lock"
flock -w 900 8 || die "another podman-test.sh holds $CT_HOME/lock"

case ${1:-} in
down)
	write_conf
	teardown
	exit
	;;
clean)
	write_conf
	teardown
	clean_cache
	exit
	;;
esac

T0=$(now)
STATE=$(mktemp -d /tmp/pec-ct.XXXXXX)
trap 'rc=$?; finish $rc' EXIT

step install bash "$REPO/integration/scripts/install-packages.sh" containers
write_conf
record_host
step base-image base_image
step build build_image
step up up
step probe probe_all
step fetch fetch_description
step pec check_pec
[ "${PEC_CT_KEEP:-0}" = 1 ] && { KEEP=1; exit 0; }
step down teardown
DOWN_DONE=1
