#!/usr/bin/env bash
# Container entrypoint of the PEC lab (docker/Dockerfile). UNTESTED HERE (no Docker on the
# machine this was written on).
#   up     start the lab, follow the logs, stop it cleanly on SIGTERM (default)
#   test   start the lab, run the integration tests, stop the lab, exit with the tests' status
#   *      run the given command
set -euo pipefail
cd /src
# A new container runs nothing yet, but the lab-state volume may hold PID files of the previous
# container whose numbers now belong to other processes: drop them before lab-up.sh trusts them.
up() {
	if [ -d "$PEC_LAB" ]; then
		find "$PEC_LAB" -name '*.pid' -delete
		rm -f "$PEC_LAB/lab.json" "$PEC_LAB/aliases-added"
	fi
	integration/scripts/lab-up.sh
}
down() { integration/scripts/lab-down.sh || true; }

case ${1:-up} in
up)
	up
	trap 'down; exit 0' TERM INT
	tail -n 0 -F "$PEC_LAB"/*/postfix/maillog "$PEC_LAB"/*/dovecot/dovecot.log "$PEC_LAB"/*/logs/*.log 2>/dev/null &
	wait $!
	;;
test)
	up
	rc=0
	go test -tags integration -race -count=1 ./integration/... || rc=$?
	down
	exit "$rc"
	;;
*)
	exec "$@"
	;;
esac
