#!/usr/bin/env bash
# The demo: run after `PEC_WIRING=pec integration/scripts/lab-up.sh` (make demo does both).
# Sends PECs through the lab and shows, saves and checks what each party receives.
set -euo pipefail
cd "$(dirname "$0")/../.."
export GOTOOLCHAIN=local
go build -o bin/pec-demo ./integration/demo
exec bin/pec-demo
