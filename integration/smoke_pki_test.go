//go:build integration

package integration

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/go-ldap/ldap/v3"
	"github.com/miekg/pkcs11"

	"github.com/gestore-pec/gestore/integration/lab"
)

func readCerts(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var certs []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		t.Fatalf("%s: no certificate", path)
	}
	return certs
}

func sha1Hex(der []byte) string {
	s := sha1.Sum(der)
	return strings.ToUpper(hex.EncodeToString(s[:]))
}

var (
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidEmailInDN        = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}
)

// Each provider certificate has the RFC 6109 §5.5 profile (pec-spec §8.1) and chains to the
// lab CA through the intermediate in cert-chain.pem.
func TestProviderCertificates(t *testing.T) {
	t.Parallel()
	l := lab.ForTest(t)
	root := readCerts(t, l.CA.Cert)[0]
	roots := x509.NewCertPool()
	roots.AddCert(root)
	for _, p := range l.Providers {
		t.Run(p.ID, func(t *testing.T) {
			leaf := readCerts(t, p.Cert)[0]
			chain := readCerts(t, p.CertChain)
			if !chain[0].Equal(leaf) {
				t.Error("cert-chain.pem does not start with the provider certificate")
			}
			if len(chain) < 2 {
				t.Error("cert-chain.pem has no intermediate")
			}
			for _, c := range chain[1:] {
				if c.Equal(root) {
					t.Error("cert-chain.pem contains the root")
				}
			}
			if got := sha1Hex(leaf.Raw); got != p.CertSHA1 {
				t.Errorf("SHA-1 %s, lab.json says %s", got, p.CertSHA1)
			}

			subj := leaf.Subject
			if !slices.Equal(subj.Organization, []string{p.Name}) || subj.CommonName != "Posta Certificata "+p.Name ||
				!slices.Equal(subj.Country, []string{"IT"}) {
				t.Errorf("subject %q does not carry the provider name %q", subj, p.Name)
			}
			for _, a := range subj.Names {
				if a.Type.Equal(oidEmailInDN) {
					t.Error("mail address in the subject DN (RFC 6109 §5.5: SHOULD NOT)")
				}
			}
			if !slices.Equal(leaf.EmailAddresses, []string{p.ServiceAddress}) {
				t.Errorf("rfc822 subjectAltName %v, want [%s]", leaf.EmailAddresses, p.ServiceAddress)
			}
			if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
				t.Error("keyUsage lacks digitalSignature")
			}
			if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}) {
				t.Errorf("extKeyUsage %v, want emailProtection", leaf.ExtKeyUsage)
			}
			if len(leaf.SubjectKeyId) == 0 || len(leaf.AuthorityKeyId) == 0 {
				t.Error("AKI or SKI missing")
			}
			if len(chain) > 1 && string(leaf.AuthorityKeyId) != string(chain[1].SubjectKeyId) {
				t.Error("AKI does not name the intermediate")
			}
			sawKU := false
			for _, e := range leaf.Extensions {
				switch {
				case e.Id.Equal(oidBasicConstraints):
					t.Error("BasicConstraints present (RFC 6109 §5.5: MUST NOT)")
				case e.Id.Equal(oidKeyUsage):
					sawKU = true
					if !e.Critical {
						t.Error("keyUsage is not critical")
					}
				case e.Critical:
					t.Errorf("extension %v is critical", e.Id)
				}
			}
			if !sawKU {
				t.Error("no keyUsage extension")
			}
			if k, ok := leaf.PublicKey.(*rsa.PublicKey); !ok || k.N.BitLen() != 2048 {
				t.Errorf("public key %T, want RSA-2048", leaf.PublicKey)
			}
			inter := x509.NewCertPool()
			for _, c := range chain[1:] {
				inter.AddCert(c)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}}); err != nil {
				t.Errorf("does not chain to the lab CA: %v", err)
			}
		})
	}
}

// slapd answers the index lookups of pec-spec §9.3 with the providers' real certificates.
func TestProvidersIndex(t *testing.T) {
	t.Parallel()
	l := lab.ForTest(t)
	conn, err := ldap.DialURL(l.LDAP.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	search := func(filter string) []*ldap.Entry {
		t.Helper()
		res, err := conn.Search(ldap.NewSearchRequest(l.LDAP.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
			0, 10, false, filter,
			[]string{"providerName", "providerCertificateHash", "providerCertificate;binary", "mailReceipt", "managedDomains"}, nil))
		if err != nil {
			t.Fatalf("search %s: %v", filter, err)
		}
		return res.Entries
	}
	for _, p := range l.Providers {
		t.Run(p.ID, func(t *testing.T) {
			// 1. is a recipient domain certified? (exact managedDomains match)
			es := search("(&(objectClass=provider)(managedDomains=" + ldap.EscapeFilter(strings.ToUpper(p.Domain)) + "))")
			if len(es) != 1 {
				t.Fatalf("%d entries manage %s, want 1", len(es), p.Domain)
			}
			e := es[0]
			if got := e.GetAttributeValue("providerName"); got != p.Name {
				t.Errorf("providerName %q, want %q", got, p.Name)
			}
			if got := e.GetAttributeValue("mailReceipt"); got != p.ReceiptAddress {
				t.Errorf("mailReceipt %q, want %q", got, p.ReceiptAddress)
			}
			if got := e.GetAttributeValue("providerCertificateHash"); got != p.CertSHA1 {
				t.Errorf("providerCertificateHash %s, lab.json says %s", got, p.CertSHA1)
			}
			der := e.GetRawAttributeValue("providerCertificate;binary")
			if _, err := x509.ParseCertificate(der); err != nil {
				t.Fatalf("providerCertificate: %v", err)
			}
			if got := sha1Hex(der); got != p.CertSHA1 {
				t.Errorf("SHA-1 of providerCertificate %s, want %s", got, p.CertSHA1)
			}
			if !readCerts(t, p.Cert)[0].Equal(mustParse(t, der)) {
				t.Error("providerCertificate differs from the provider's certificate file")
			}
			// 2. who signed this? (hash lookup, case-insensitive)
			es = search("(providerCertificateHash=" + strings.ToLower(p.CertSHA1) + ")")
			if len(es) != 1 || es[0].GetAttributeValue("providerName") != p.Name {
				t.Errorf("lookup by certificate hash found %d entries", len(es))
			}
		})
	}
	if es := search("(managedDomains=" + l.Ordinary.Domain + ")"); len(es) != 0 {
		t.Errorf("the ordinary domain %s is in the index", l.Ordinary.Domain)
	}
	if err := conn.Bind(l.LDAP.BindDN, l.LDAP.Password); err != nil {
		t.Errorf("bind as %s: %v", l.LDAP.BindDN, err)
	}
}

func mustParse(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Each provider's SoftHSM2 token (found by label) signs with a key generated on the token, and
// the signature verifies with the certificate in lab.json, which is also stored on the token.
// Not parallel: it sets SOFTHSM2_CONF for the PKCS#11 module.
func TestTokensSign(t *testing.T) {
	l := lab.ForTest(t)
	t.Setenv("SOFTHSM2_CONF", l.SoftHSM.Conf)
	ctx := pkcs11.New(l.SoftHSM.Module)
	if ctx == nil {
		t.Fatalf("cannot load %s", l.SoftHSM.Module)
	}
	if err := ctx.Initialize(); err != nil {
		t.Fatal(err)
	}
	defer ctx.Destroy()
	defer ctx.Finalize()
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range l.Providers {
		t.Run(p.ID, func(t *testing.T) {
			if p.Token == nil {
				t.Fatal("lab.json: no token")
			}
			slot, found := uint(0), false
			for _, s := range slots {
				if ti, err := ctx.GetTokenInfo(s); err == nil && ti.Label == p.Token.Label {
					slot, found = s, true
				}
			}
			if !found {
				t.Fatalf("no token labelled %q", p.Token.Label)
			}
			sess, err := ctx.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION)
			if err != nil {
				t.Fatal(err)
			}
			defer ctx.CloseSession(sess)
			if err := ctx.Login(sess, pkcs11.CKU_USER, p.Token.PIN); err != nil {
				t.Fatalf("login with the PIN from lab.json: %v", err)
			}
			defer ctx.Logout(sess)

			find := func(class uint) []pkcs11.ObjectHandle {
				t.Helper()
				id, _ := hex.DecodeString(p.Token.KeyID)
				if err := ctx.FindObjectsInit(sess, []*pkcs11.Attribute{
					pkcs11.NewAttribute(pkcs11.CKA_CLASS, class),
					pkcs11.NewAttribute(pkcs11.CKA_ID, id),
				}); err != nil {
					t.Fatal(err)
				}
				hs, _, err := ctx.FindObjects(sess, 4)
				ctx.FindObjectsFinal(sess)
				if err != nil {
					t.Fatal(err)
				}
				return hs
			}
			keys := find(pkcs11.CKO_PRIVATE_KEY)
			if len(keys) != 1 {
				t.Fatalf("%d private keys with id %s, want 1", len(keys), p.Token.KeyID)
			}
			attrs, err := ctx.GetAttributeValue(sess, keys[0], []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_LABEL, nil),
				pkcs11.NewAttribute(pkcs11.CKA_LOCAL, nil),
				pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil),
				pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil),
			})
			if err != nil {
				t.Fatal(err)
			}
			if string(attrs[0].Value) != p.Token.KeyLabel {
				t.Errorf("key label %q, want %q", attrs[0].Value, p.Token.KeyLabel)
			}
			if !isTrue(attrs[1].Value) || isTrue(attrs[2].Value) || !isTrue(attrs[3].Value) {
				t.Errorf("key must be generated on the token, sensitive, not extractable (local=%v extractable=%v sensitive=%v)",
					attrs[1].Value, attrs[2].Value, attrs[3].Value)
			}

			data := make([]byte, 256)
			_, _ = rand.Read(data)
			if err := ctx.SignInit(sess, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_SHA256_RSA_PKCS, nil)}, keys[0]); err != nil {
				t.Fatal(err)
			}
			sig, err := ctx.Sign(sess, data)
			if err != nil {
				t.Fatal(err)
			}
			cert := readCerts(t, p.Cert)[0]
			digest := sha256.Sum256(data)
			if err := rsa.VerifyPKCS1v15(cert.PublicKey.(*rsa.PublicKey), crypto.SHA256, digest[:], sig); err != nil {
				t.Errorf("token signature does not verify with %s: %v", p.Cert, err)
			}

			certs := find(pkcs11.CKO_CERTIFICATE)
			if len(certs) != 1 {
				t.Fatalf("%d certificates with id %s on the token, want 1", len(certs), p.Token.KeyID)
			}
			v, err := ctx.GetAttributeValue(sess, certs[0], []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
			if err != nil {
				t.Fatal(err)
			}
			if string(v[0].Value) != string(cert.Raw) {
				t.Error("the certificate on the token differs from lab.json's")
			}
		})
	}
}

func isTrue(v []byte) bool { return len(v) == 1 && v[0] != 0 }
