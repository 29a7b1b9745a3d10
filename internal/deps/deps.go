// Package deps pins the project's third-party modules while the packages that use them are
// being written. Delete an import here once a real package imports the module.
package deps

import (
	_ "github.com/ThalesIgnite/crypto11"
	_ "github.com/d--j/go-milter"
	_ "github.com/d--j/go-milter/mailfilter"
	_ "github.com/digitorus/timestamp"
	_ "github.com/emersion/go-message"
	_ "github.com/emersion/go-smtp"
	_ "github.com/go-ldap/ldap/v3"
	_ "github.com/mattn/go-sqlite3"
	_ "github.com/miekg/pkcs11"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/smallstep/pkcs7"
	_ "github.com/spf13/viper"
	_ "gopkg.in/yaml.v3"
)
