package igpec

import (
	"regexp"
	"strings"
	"testing"
)

// TestSchemaMatchesSpec checks pec-index.schema attribute by attribute against RFC 6109 §4.5
// as pec-spec.md §9.1 tabulates it.
func TestSchemaMatchesSpec(t *testing.T) {
	blocks := map[string]string{} // NAME -> definition, whitespace collapsed
	starts := regexp.MustCompile(`(?m)^(attributetype|objectclass) `).FindAllStringIndex(string(Schema), -1)
	for i, st := range starts {
		end := len(Schema)
		if i+1 < len(starts) {
			end = starts[i+1][0]
		}
		def := strings.Join(strings.Fields(string(Schema[st[0]:end])), " ")
		m := regexp.MustCompile(`NAME '([^']+)'`).FindStringSubmatch(def)
		if m == nil {
			t.Fatalf("no NAME in %q", def)
		}
		blocks[m[1]] = def
	}
	want := map[string][]string{
		"providerCertificateHash": {"1.3.6.1.4.1.16572.2.2.1 ", "EQUALITY caseIgnoreIA5Match", "SYNTAX 1.3.6.1.4.1.1466.115.121.1.26"},
		"providerCertificate":     {"1.3.6.1.4.1.16572.2.2.2 ", "SYNTAX 1.3.6.1.4.1.1466.115.121.1.8"},
		"providerName":            {"1.3.6.1.4.1.16572.2.2.3 ", "SUP name", "SINGLE-VALUE"},
		"mailReceipt":             {"1.3.6.1.4.1.16572.2.2.4 ", "EQUALITY caseIgnoreIA5Match", "SYNTAX 1.3.6.1.4.1.1466.115.121.1.26", "SINGLE-VALUE"},
		"managedDomains":          {"1.3.6.1.4.1.16572.2.2.5 ", "EQUALITY caseIgnoreIA5Match", "SYNTAX 1.3.6.1.4.1.1466.115.121.1.26"},
		"LDIFLocationURL":         {"1.3.6.1.4.1.16572.2.2.6 ", "EQUALITY caseExactMatch", "SYNTAX 1.3.6.1.4.1.1466.115.121.1.15", "SINGLE-VALUE"},
		"providerUnit":            {"1.3.6.1.4.1.16572.2.2.7 ", "SUP name", "SINGLE-VALUE"},
		"provider": {"1.3.6.1.4.1.16572.2.1.2 ", "SUP top STRUCTURAL",
			"MUST ( providerCertificateHash $ providerCertificate $ providerName $ mailReceipt $ managedDomains )",
			"MAY ( description $ LDIFLocationURL $ providerUnit )"},
		"LDIFLocationURLObject": {"1.3.6.1.4.1.16572.2.1.1 ", "SUP top AUXILIARY", "MAY ( LDIFLocationURL )"},
	}
	if len(blocks) != len(want) {
		t.Errorf("schema defines %d names, want %d: %v", len(blocks), len(want), blocks)
	}
	for name, parts := range want {
		def, ok := blocks[name]
		if !ok {
			t.Errorf("%s not defined", name)
			continue
		}
		for _, p := range parts {
			if !strings.Contains(def, p) {
				t.Errorf("%s: %q lacks %q", name, def, p)
			}
		}
		multi := name == "providerCertificateHash" || name == "providerCertificate" || name == "managedDomains"
		if multi && strings.Contains(def, "SINGLE-VALUE") {
			t.Errorf("%s must be multi-valued (renewal overlap, several domains)", name)
		}
	}
}
