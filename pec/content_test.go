package pec_test

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/inspect"
	"github.com/gestore-pec/gestore/pec/store"
)

func zipOf(t *testing.T, files map[string][]byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w := zip.NewWriter(&b)
	for name, data := range files {
		f, err := w.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		f.Write(data)
	}
	w.Close()
	return b.Bytes()
}

// withAttachment is a message from alice to bruno with one base64 attachment.
func withAttachment(name string, data []byte) []byte {
	enc := base64.StdEncoding.EncodeToString(data)
	var lines []string
	for len(enc) > 76 {
		lines, enc = append(lines, enc[:76]), enc[76:]
	}
	lines = append(lines, enc)
	return msg("From: alice@pec-a.test", "To: bruno@pec-b.test", "Subject: allegato", "Message-ID: <att-"+name+"@x>", "Date: Sun, 22 Nov 2026 10:00:00 +0100",
		"MIME-Version: 1.0", "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nvedi allegato\r\n"+
			"--b\r\nContent-Type: application/octet-stream; name=\""+name+"\"\r\nContent-Disposition: attachment; filename=\""+name+"\"\r\n"+
			"Content-Transfer-Encoding: base64\r\n\r\n"+strings.Join(lines, "\r\n")+"\r\n--b--")
}

func contentFixture(t *testing.T) *fixture {
	t.Helper()
	in, err := inspect.New(inspect.DefaultPolicy(), inspect.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return newFixtureWith(t, pec.Limits{}, pec.Options{}, in)
}

// Issue 16 at the access point: an executable renamed .txt inside a zip gets the avviso di
// non accettazione naming the file; nothing is relayed.
func TestContentForbiddenAttachment(t *testing.T) {
	f := contentFixture(t)
	pe := make([]byte, 0x100) // a minimal PE: "MZ", e_lfanew at 0x3c, "PE\0\0" there
	copy(pe, "MZ")
	pe[0x3c] = 0x80
	copy(pe[0x80:], "PE\x00\x00")
	m := withAttachment("documenti.zip", zipOf(t, map[string][]byte{"setup.txt": pe}))
	_, err := f.ap.Submit(context.Background(), submission(m, "bruno@pec-b.test"))
	var ref *pec.Refused
	if !errors.As(err, &ref) || !strings.Contains(ref.Reason, "documenti.zip > setup.txt") {
		t.Fatalf("err = %v", err)
	}
	items := f.outbox(t)
	if len(items) != 1 || items[0].Kind != "non-accettazione" {
		t.Fatalf("outbox %+v", items)
	}
	c := classify(t, items[0].Raw, f.kr.CA)
	if !strings.Contains(c.Daticert.Dati.ErroreEsteso, "setup.txt") {
		t.Errorf("errore-esteso %q", c.Daticert.Dati.ErroreEsteso)
	}
}

// A document with macros is accepted and flagged: the busta carries X-PEC-Macro and the
// courtesy note, and the log records the flag once the busta is queued.
func TestContentMacroFlagged(t *testing.T) {
	f := contentFixture(t)
	docm := zipOf(t, map[string][]byte{"[Content_Types].xml": []byte("<Types/>"), "word/document.xml": []byte("<w/>"),
		"word/vbaProject.bin": []byte("vba")})
	res, err := f.ap.Submit(context.Background(), submission(withAttachment("relazione.docm", docm), "bruno@pec-b.test"))
	if err != nil {
		t.Fatal(err)
	}
	c := classify(t, bytes.Join(res.Busta, nil), f.kr.CA)
	if v, _ := c.Header.Get(inspect.HeaderMacro); strings.TrimSpace(v) != inspect.MacroPresent {
		t.Errorf("%s = %q", inspect.HeaderMacro, v)
	}
	if !bytes.Contains(bytes.Join(res.Busta, nil), []byte("Avviso del gestore")) {
		t.Error("no courtesy note in the busta's text")
	}
	f.confirm(t, res)
	found := false
	for _, e := range f.events(t) {
		found = found || (e.Kind == store.KindContenuto && strings.Contains(e.ErrorDetail, "macro"))
	}
	if !found {
		t.Error("no contenuto-segnalato event")
	}
	// A clean message: no flag.
	clean, err := f.ap.Submit(context.Background(), submission(withAttachment("nota.txt", []byte("solo testo")), "bruno@pec-b.test"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(bytes.Join(clean.Busta, nil), []byte("X-PEC-")) {
		t.Error("a clean message was flagged")
	}
}
