package pec

import (
	"testing"
	"time"

	"github.com/gestore-pec/gestore/pec/daticert"
)

// A breve receipt of a message without attachments carries the message itself (nothing to
// replace by a hash, RFC 6109 §3.3.2.2): it is a conforming breve, not a completa sent when
// breve was requested. Seen in the lab's scenario suite, where A's reception point wrapped
// B's genuine breve receipt as an anomaly and the sender never got it. A completa of a
// message with attachments whose daticert asks for breve stays an error.
func TestClassifyBreveWithoutAttachments(t *testing.T) {
	f := newFix(t, time.Now())
	bd := &Builder{ID: f.p, Keys: f.kr}
	plain, err := ParseOriginal([]byte("From: alice@pec-a.test\r\nTo: bruno@pec-b.test\r\nSubject: solo testo\r\n" +
		"Message-ID: <plain.1@client.example>\r\nDate: Sat, 22 Nov 2025 10:00:00 +0100\r\n\r\nNessun allegato.\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		receipt daticert.ReceiptType
		want    Kind
	}{{daticert.Breve, KindConsegnaBreve}, {daticert.Completa, KindConsegnaCompleta}} {
		tx := *f.tx
		tx.Receipt = tc.receipt
		m, err := bd.Consegna(f.ref, &tx, "bruno@pec-b.test", true, PostacertEML(plain, tx.ID))
		if err != nil {
			t.Fatal(err)
		}
		c := Classify(m.Bytes(), ClassifyOptions{})
		if m.Kind != tc.want || c.Kind != tc.want || !c.Conforms() {
			t.Errorf("%s requested: built %v, classified %v, deviations %+v", tc.receipt, m.Kind, c.Kind, c.Deviations)
		}
	}

	// More than requested: the fixture's message has an attachment, sent whole.
	tx := *f.tx
	tx.Receipt = daticert.Breve
	d := daticertFor(KindConsegnaCompleta, bd.ID, f.ref, &tx)
	d.Dati.Ricevuta, d.Dati.Consegna = daticert.Breve, "bruno@pec-b.test"
	m, err := bd.receipt(KindConsegnaCompleta, f.ref, &tx, tx.Sender, "bruno@pec-b.test", "bruno@pec-b.test",
		textData{rcpt: "bruno@pec-b.test"}, d, ToCRLF(PostacertEML(f.orig, tx.ID)))
	if err != nil {
		t.Fatal(err)
	}
	c := Classify(m.Bytes(), ClassifyOptions{})
	found := false
	for _, dv := range c.Deviations {
		found = found || dv.Code == "consegna-content"
	}
	if c.Kind != KindConsegnaCompleta || !found {
		t.Errorf("a completa with its attachment whole, breve requested: %v, deviations %+v", c.Kind, c.Deviations)
	}
}
