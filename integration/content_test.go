//go:build integration

package integration

import (
	"archive/zip"
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/gestore-pec/gestore/integration/mailtest"
	"github.com/gestore-pec/gestore/pec"
)

// Issue 16 through the lab: the content policy at A's access point.

func zipFiles(t *testing.T, files map[string][]byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w := zip.NewWriter(&b)
	for n, d := range files {
		f, _ := w.Create(n)
		f.Write(d)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func attach(from, to, token, name string, data []byte) []byte {
	enc := base64.StdEncoding.EncodeToString(data)
	var lines []string
	for len(enc) > 76 {
		lines, enc = append(lines, enc[:76]), enc[76:]
	}
	lines = append(lines, enc)
	return raw("--b\ncontent-type: text/plain\n\nin allegato\n--b\nContent-Type: application/octet-stream; name=\""+name+
		"\"\nContent-Disposition: attachment; filename=\""+name+"\"\nContent-Transfer-Encoding: base64\n\n"+
		strings.Join(lines, "\n")+"\n--b--\n",
		"From: "+from, "To: "+to, "Subject: "+token, "Message-ID: <"+token+"@client.example>", "MIME-Version: 1.0",
		"Content-Type: multipart/mixed; boundary=\"b\"")
}

func TestContentPolicy(t *testing.T) {
	t.Parallel()
	l, a, b, _ := pecLab(t)
	alice, bruno := user(t, a, "alice"), user(t, b, "bruno")
	pe := make([]byte, 0x100)
	copy(pe, "MZ")
	pe[0x3c] = 0x80
	copy(pe[0x80:], "PE\x00\x00")
	fwd := raw("--i\ncontent-type: text/plain\n\nx\n--i\nContent-Type: application/zip; name=\"a.zip\"\nContent-Transfer-Encoding: base64\n\n"+
		base64.StdEncoding.EncodeToString(zipFiles(t, map[string][]byte{"fattura.pdf": pe}))+"\n--i--\n",
		"From: x@y", "Subject: inoltrato", "MIME-Version: 1.0", "Content-Type: multipart/mixed; boundary=\"i\"")
	for _, c := range []struct {
		name, file string
		data       []byte
		refuse     string // in the reason; "" = accepted
		header     string // header expected on the busta when accepted
	}{
		{"exe renamed", "foto.txt", pe, "foto.txt", ""},
		{"exe in a zip", "documenti.zip", zipFiles(t, map[string][]byte{"setup.txt": pe}), "documenti.zip > setup.txt", ""},
		{"exe in a zip in a forwarded eml", "inoltro.eml", fwd, "fattura.pdf", ""},
		{"macro", "relazione.docm", zipFiles(t, map[string][]byte{"[Content_Types].xml": []byte("<Types/>"), "word/vbaProject.bin": []byte("vba")}), "", "X-PEC-Macro"},
		{"clean docx", "relazione.docx", zipFiles(t, map[string][]byte{"[Content_Types].xml": []byte("<Types/>"), "word/document.xml": []byte("<w/>")}), "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			token := mailtest.Token("content")
			err := tlsSubmission(t, a, &alice).Send(alice.Address, []string{bruno.Address}, attach(alice.Address, bruno.Address, token, c.file, c.data))
			if c.refuse != "" {
				var se *mailtest.StepError
				if !errors.As(err, &se) || se.Code != 550 {
					t.Fatalf("err = %v, want 550", err)
				}
				av := classify(t, l, waitOne(t, mailbox(a, alice), token), pec.KindNonAccettazione)
				if !strings.Contains(av.Daticert.Dati.ErroreEsteso, c.refuse) {
					t.Errorf("errore-esteso %q, want it to name %q", av.Daticert.Dati.ErroreEsteso, c.refuse)
				}
				none(t, mailbox(b, bruno), token)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			busta := classify(t, l, waitOne(t, mailbox(b, bruno), token), pec.KindBusta)
			_, flagged := busta.Header.Get("X-PEC-Macro")
			if (c.header != "") != flagged {
				t.Errorf("X-PEC-Macro present %v, want %v", flagged, c.header != "")
			}
		})
	}
}
