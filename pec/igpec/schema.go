package igpec

import _ "embed"

// Schema is the OpenLDAP schema of the index (slapd.conf "include" format), the file
// pec-index.schema shipped in this package.
//
//go:embed pec-index.schema
var Schema []byte
