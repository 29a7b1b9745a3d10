// Package integration holds the tests that run against the real two-provider lab (Postfix,
// Dovecot, slapd, SoftHSM2, ClamAV on loopback) started by integration/scripts/lab-up.sh.
// They are behind the "integration" build tag and read every address from lab.json:
//
//	integration/scripts/lab-up.sh
//	go test -tags integration -race ./integration/...
//
// Without the lab they fail; they never skip.
package integration
