package igpec

import (
	"bufio"
	"encoding/base64"
	"io"
	"strings"
)

// foldWidth is the column at which WriteLDIF folds long lines (RFC 2849 allows any width;
// 76 is what OpenLDAP's tools write).
const foldWidth = 76

// WriteLDIF writes records as an LDIF content file (RFC 2849, "version: 1"), one entry per
// record with objectClass provider, in the form slapd accepts with ldapadd: certificates as
// "providerCertificate;binary::" base64 (lab-recipe §6: without ;binary slapd refuses the
// value), hashes in upper case. Values that are not RFC 2849 SAFE-STRINGs are base64-encoded.
func WriteLDIF(w io.Writer, records []*Record) error {
	bw := bufio.NewWriter(w)
	bw.WriteString("version: 1\n")
	for _, r := range records {
		bw.WriteString("\n")
		writeRecord(bw, r)
	}
	return bw.Flush()
}

func writeRecord(w *bufio.Writer, r *Record) {
	writeAttr(w, "dn", r.DN)
	writeAttr(w, "objectClass", "top")
	writeAttr(w, "objectClass", "provider")
	writeAttr(w, "providerName", r.Name)
	if r.Unit != "" {
		writeAttr(w, "providerUnit", r.Unit)
	}
	for _, h := range r.Hashes {
		writeAttr(w, "providerCertificateHash", h)
	}
	for _, c := range r.Certificates {
		writeFolded(w, "providerCertificate;binary:: "+base64.StdEncoding.EncodeToString(c.Raw))
	}
	writeAttr(w, "mailReceipt", r.MailReceipt)
	for _, d := range r.Domains {
		writeAttr(w, "managedDomains", d)
	}
	if r.LDIFLocationURL != "" {
		writeAttr(w, "LDIFLocationURL", r.LDIFLocationURL)
	}
	if r.Description != "" {
		writeAttr(w, "description", r.Description)
	}
}

func writeAttr(w *bufio.Writer, name, value string) {
	if safeString(value) {
		writeFolded(w, name+": "+value)
		return
	}
	writeFolded(w, name+":: "+base64.StdEncoding.EncodeToString([]byte(value)))
}

// writeFolded writes one logical line, folded at foldWidth columns.
func writeFolded(w *bufio.Writer, s string) {
	width := foldWidth
	for len(s) > width {
		w.WriteString(s[:width])
		w.WriteString("\n ")
		s = s[width:]
		width = foldWidth - 1
	}
	w.WriteString(s)
	w.WriteByte('\n')
}

// safeString reports whether s is an RFC 2849 SAFE-STRING that round-trips when written
// plainly: ASCII without NUL, CR or LF, not starting with space, ':' or '<', and (so that
// readers that trim do not change it) not ending with a space.
func safeString(s string) bool {
	if s == "" {
		return true
	}
	if s[0] == ' ' || s[0] == ':' || s[0] == '<' || strings.HasSuffix(s, " ") {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == 0 || c == '\n' || c == '\r' || c > 126 {
			return false
		}
	}
	return true
}
