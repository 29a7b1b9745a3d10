package pec

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"io"
	"strings"
	"time"
)

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewIdentificativo returns a fresh PEC msgid (pec-spec.md §6.1) of the form
//
//	<YYYYMMDDhhmmss UTC>.<node>.<80 random bits, base32 lowercase>@<domain>
//
// for example 20251122094800.mx1.k5v3q2r7x1m4d6ha@pec-a.test. Uniqueness comes from the
// random part alone (2^80 values per node per second), so no counter has to survive a
// restart and several nodes need no coordination; the time and node make ids sortable and
// traceable in the logs. The left part is an RFC 5322 dot-atom-text of letters, digits and
// dots. node is reduced to [a-z0-9-] ("n" when empty). rnd defaults to crypto/rand.
func NewIdentificativo(now time.Time, node, domain string, rnd io.Reader) (string, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	var buf [10]byte
	if _, err := io.ReadFull(rnd, buf[:]); err != nil {
		return "", fmt.Errorf("pec: identificativo: %w", err)
	}
	return fmt.Sprintf("%s.%s.%s@%s", now.UTC().Format("20060102150405"), atomNode(node),
		strings.ToLower(b32.EncodeToString(buf[:])), strings.ToLower(domain)), nil
}

func atomNode(node string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(node) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			b.WriteRune(r)
		}
	}
	if b.Len() == 0 {
		return "n"
	}
	return b.String()
}

// ReceiptMessageID returns the deterministic Message-ID (with angle brackets) of the system
// message of kind k about identificativo id and recipient rcpt, emitted by domain. A resend
// after a crash rebuilds the same Message-ID, so the delivery point can drop the duplicate
// (DESIGN.md "Durability"). rcpt is "" for messages about the whole transaction
// (accettazione, non accettazione); for a presa in carico pass the sorted recipients joined
// by ",". The form is <kind>.<26 base32 chars of SHA-256>@domain.
func ReceiptMessageID(k Kind, id, rcpt, domain string) string {
	h := sha256.Sum256([]byte(k.Info().Name + "\x00" + id + "\x00" + strings.ToLower(rcpt)))
	return "<" + k.Info().Name + "." + strings.ToLower(b32.EncodeToString(h[:16])) + "@" + strings.ToLower(domain) + ">"
}
