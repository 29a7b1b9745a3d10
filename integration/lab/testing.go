package lab

import "testing"

// ForTest loads lab.json for an integration test and fails the test (never skips it) when the
// lab is not up: a missing component must show as a failure, not as a silent skip.
func ForTest(tb testing.TB) *Lab {
	tb.Helper()
	l, err := Load()
	if err != nil {
		tb.Fatal(err)
	}
	return l
}
