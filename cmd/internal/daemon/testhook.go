//go:build !testhooks

package daemon

import "github.com/gestore-pec/gestore/pec"

// hookKeys returns keys unchanged but in binaries built with -tags testhooks (testhook_on.go).
func hookKeys(keys pec.Signer) pec.Signer { return keys }
