//go:build !testhooks

package milter

// testHook is a no-op in every binary but those built with -tags testhooks (testhook_on.go),
// which the fault tests of the integration suite use to stop Postfix at an exact point.
func testHook(string) {}
