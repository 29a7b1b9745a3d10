//go:build integration

package integration

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/integration/mailtest"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/store"
)

// TestAccessPointStreamedScan: a submission past milter.stream_scan_from (256 KiB) is scanned
// by the lab's clamd while Postfix sends it to pec-milter (issue 19, P2'), on the real
// Postfix: a clean one becomes its busta with the content intact, one with EICAR at its very
// end gets the avviso per virus and reaches nobody; A's log shows both scans began before
// end-of-message (ahead_ms).
func TestAccessPointStreamedScan(t *testing.T) {
	t.Parallel()
	l, a, b, _ := pecLab(t)
	alice, bruno := user(t, a, "alice"), user(t, b, "bruno")
	filler := strings.Repeat("Riga di testo di una lunga relazione tecnica, per passare la soglia.\n", 9000) // ~620 KB

	t.Run("clean", func(t *testing.T) {
		token := mailtest.Token("stream")
		orig := raw(filler+"fine "+token+"\n", "From: "+alice.Address, "To: "+bruno.Address, "Subject: relazione "+token,
			"Message-ID: <"+token+"@client.example>")
		if err := tlsSubmission(t, a, &alice).Send(alice.Address, []string{bruno.Address}, orig); err != nil {
			t.Fatal(err)
		}
		c := classify(t, l, waitOne(t, mailbox(b, bruno), token), pec.KindBusta)
		checkPostacert(t, c.Postacert, orig, c.Daticert.Dati.Identificativo)
		checkAhead(t, a.Logs["pec-milter"], "pec accepted", c.Daticert.Dati.Identificativo)
	})
	t.Run("eicar at the end", func(t *testing.T) {
		token := mailtest.Token("stream")
		orig := raw("--b0\nContent-Type: text/plain\n\n"+filler+"--b0\nContent-Type: application/octet-stream; name=\"f.com\"\n"+
			"Content-Disposition: attachment; filename=\"f.com\"\n\n"+eicar+"\n--b0--\n",
			"From: "+alice.Address, "To: "+bruno.Address, "Subject: "+token, "MIME-Version: 1.0",
			"Content-Type: multipart/mixed; boundary=\"b0\"")
		err := tlsSubmission(t, a, &alice).Send(alice.Address, []string{bruno.Address}, orig)
		var se *mailtest.StepError
		if !errors.As(err, &se) || se.Step != "DATA" || se.Code != 554 {
			t.Fatalf("submission: %v; want DATA refused with 554", err)
		}
		c := classify(t, l, waitOne(t, mailbox(a, alice), token), pec.KindNonAccettazioneVirus)
		id := c.Daticert.Dati.Identificativo
		var virus []*store.Event
		for _, e := range logEvents(t, a, id, "") {
			if e.Kind == store.KindNonAccettazioneVirus {
				virus = append(virus, e)
			}
		}
		if len(virus) != 1 || !strings.Contains(virus[0].Virus, "EICAR") {
			t.Fatalf("log events: %+v", virus)
		}
		none(t, mailbox(b, bruno), token)
		checkAhead(t, a.Logs["pec-milter"], "pec not accepted", id)
	})
}

// checkAhead finds pec-milter's log line msg for identificativo id and checks that its scan
// ran ahead of end-of-message.
func checkAhead(t *testing.T, logFile, msg, id string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ahead, found := aheadOf(t, logFile, msg, id)
		switch {
		case found && ahead > 0:
			return
		case found:
			t.Fatalf("%s %s: the scan did not run ahead of end-of-message (ahead_ms %v)", msg, id, ahead)
		case time.Now().After(deadline):
			t.Fatalf("no %q line for %s in %s", msg, id, logFile)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func aheadOf(t *testing.T, logFile, msg, id string) (float64, bool) {
	t.Helper()
	f, err := os.Open(logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if !strings.Contains(sc.Text(), id) {
			continue
		}
		var line struct {
			Msg            string `json:"msg"`
			Identificativo string `json:"identificativo"`
			Stages         struct {
				Ahead float64 `json:"ahead_ms"`
			} `json:"stages"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == msg && line.Identificativo == id {
			return line.Stages.Ahead, true
		}
	}
	return 0, false
}
