//go:build integration

package integration

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
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
// end-of-message (ahead_ms), and B scanned the clean busta's message apart from the rest
// (scans 2, pec.Engine.scanReceived).
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
		// At B the busta's postacert.eml is past 256 KiB: scanned apart from the rest.
		checkScans(t, b.Logs["pec-milter"], "pec received", c.Daticert.Dati.Identificativo, 2)
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
	if st := waitStages(t, logFile, msg, id); st.Ahead <= 0 {
		t.Fatalf("%s %s: the scan did not run ahead of end-of-message (ahead_ms %v)", msg, id, st.Ahead)
	}
}

// checkScans finds pec-milter's log line msg for identificativo id and checks how many
// streams its scan sent clamd.
func checkScans(t *testing.T, logFile, msg, id string, want int) {
	t.Helper()
	if st := waitStages(t, logFile, msg, id); st.Scans != want {
		t.Fatalf("%s %s: %d scans, want %d", msg, id, st.Scans, want)
	}
}

// waitStages waits up to 10 s for pec-milter's log line msg for identificativo id and
// returns its stages.
func waitStages(t *testing.T, logFile, msg, id string) logStages {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if st, found := stagesOf(t, logFile, msg, id); found {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q line for %s in %s", msg, id, logFile)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// logStages are the stage figures of a pec-milter log line.
type logStages struct {
	Ahead float64 `json:"ahead_ms"`
	Scans int     `json:"scans"`
}

// stagesOf finds pec-milter's log line msg for identificativo id in logFile.
func stagesOf(t *testing.T, logFile, msg, id string) (logStages, bool) {
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
			Msg            string    `json:"msg"`
			Identificativo string    `json:"identificativo"`
			Stages         logStages `json:"stages"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == msg && line.Identificativo == id {
			return line.Stages, true
		}
	}
	return logStages{}, false
}

// TestAccessPointClamdKilledMidStream: clamd is killed (SIGKILL) while it receives a 20 MB
// submission streamed to it as Postfix sends the message to the milter. The client gets a
// 4xx, nothing is attested; once clamd is back, the client's retry of the same message is
// accepted with exactly one busta and one accettazione.
func TestAccessPointClamdKilledMidStream(t *testing.T) {
	t.Parallel()
	l, a, _, o := pecLab(t)
	p := startPrivateAP(t, l, a)
	alice, oscar := user(t, a, "alice"), user(t, o, "oscar")
	token := mailtest.Token("midstream")
	line := "Allegato tecnico, una riga di testo di una settantina di caratteri, ok.\n"
	msg := raw(strings.Repeat(line, 20<<20/len(line))+"fine "+token+"\n", "From: "+alice.Address, "To: "+oscar.Address,
		"Subject: "+token, "Message-ID: <"+token+"@client.example>")

	tmp := filepath.Join(p.dir, "clamtmp")
	done := make(chan error, 1)
	go func() { done <- p.submission.Send(alice.Address, []string{oscar.Address}, msg) }()
	killed := false
	for deadline := time.Now().Add(60 * time.Second); !killed && time.Now().Before(deadline); {
		select {
		case err := <-done:
			t.Fatalf("the submission ended before clamd received its stream: %v", err)
		default:
		}
		if files, _ := filepath.Glob(filepath.Join(tmp, "clamav-*.tmp")); len(files) > 0 {
			p.stopClamd() // SIGKILL, while the stream is being received (or scanned)
			killed = true
		}
		time.Sleep(2 * time.Millisecond)
	}
	if !killed {
		t.Fatal("clamd never received a stream")
	}
	err := <-done
	var se *mailtest.StepError
	if !errors.As(err, &se) || se.Step != "DATA" || se.Code < 400 || se.Code > 499 {
		p.startClamd(t)
		t.Fatalf("with clamd killed mid-stream: %v; want a 4xx at DATA", err)
	}
	if last, ok := p.failureCause(t, "pec: scan: clamd"); !ok {
		t.Errorf("the temporary failure was not the scan's: %s", last)
	}
	none(t, mailbox(a, alice), token) // no accettazione for a message not taken

	p.startClamd(t)
	deadline := time.Now().Add(60 * time.Second)
	for {
		err = p.submission.Send(alice.Address, []string{oscar.Address}, msg) // the client's retry
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	if err != nil {
		t.Fatalf("after clamd came back: %v", err)
	}
	classify(t, l, waitOne(t, mailbox(a, alice), token), pec.KindAccettazione)
	waitOne(t, mailbox(o, oscar), token)
}
