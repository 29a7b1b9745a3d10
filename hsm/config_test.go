package hsm_test

import (
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/hsm"
)

func TestConfigErrors(t *testing.T) {
	p11 := hsm.PKCS11Config{Module: softhsmModule, Token: "pec-main", Key: "rsa", PINEnv: testPINEnv}
	for name, c := range map[string]struct {
		cfg  hsm.Config
		want string
	}{
		"nothing":       {hsm.Config{}, "no key for domain pec-a.test"},
		"both":          {hsm.Config{PKCS11: p11, PEMKey: "k.pem", Certificate: "c.pem"}, "give pkcs11 or pem_key, not both"},
		"no cert":       {hsm.Config{PKCS11: p11}, "signer.certificate: missing"},
		"no module":     {hsm.Config{PKCS11: hsm.PKCS11Config{Token: "t", Key: "k", PINEnv: "X"}, Certificate: "c"}, "signer.pkcs11.module: missing"},
		"no token":      {hsm.Config{PKCS11: hsm.PKCS11Config{Module: "m", Key: "k", PINEnv: "X"}, Certificate: "c"}, "token: missing"},
		"no pin source": {hsm.Config{PKCS11: hsm.PKCS11Config{Module: "m", Token: "t", Key: "k"}, Certificate: "c"}, "pin_env or pin_file: missing"},
		"bad key_id":    {hsm.Config{PKCS11: hsm.PKCS11Config{Module: "m", Token: "t", KeyID: "0g", PINEnv: "X"}, Certificate: "c"}, "signer.pkcs11.key_id"},
		"dup domain": {hsm.Config{PKCS11: p11, Certificate: "c", Keys: []hsm.KeyConfig{
			{Domain: "pec2.test", PKCS11: p11, Certificate: "c"}, {Domain: "PEC2.test", PKCS11: p11, Certificate: "c"}}}, "signer.keys[1].domain: pec2.test listed twice"},
		"key without domain": {hsm.Config{PKCS11: p11, Certificate: "c", Keys: []hsm.KeyConfig{{PKCS11: p11}}}, "signer.keys[0].domain: missing"},
		"pem in production":  {hsm.Config{PEMKey: "k.pem", Certificate: "c"}, "refused in production"},
		"negative pool":      {hsm.Config{PKCS11: p11, Certificate: "c", PoolSize: -1}, "signer.pool_size: -1: must not be negative"},
		"negative wait":      {hsm.Config{PKCS11: p11, Certificate: "c", SessionWait: -time.Second}, "signer.session_wait: -1s: must not be negative"},
		"negative retry_min": {hsm.Config{PKCS11: p11, Certificate: "c", RetryMin: -time.Second}, "signer.retry_min:"},
		"negative retry_max": {hsm.Config{PKCS11: p11, Certificate: "c", RetryMax: -time.Second}, "signer.retry_max:"},
		"negative warning":   {hsm.Config{PKCS11: p11, Certificate: "c", ExpiryWarning: -time.Hour}, "signer.expiry_warning:"},
	} {
		t.Run(name, func(t *testing.T) {
			deps := testDeps()
			deps.Provider.Production = name == "pem in production"
			k, err := hsm.New(c.cfg, deps)
			if err == nil {
				k.Close()
				t.Fatalf("New succeeded, want %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q lacks %q", err, c.want)
			}
		})
	}
}
