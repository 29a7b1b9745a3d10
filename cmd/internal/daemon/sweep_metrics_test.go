package daemon

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/cmd/internal/config"
	"github.com/gestore-pec/gestore/hsm/hsmtest"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/daticert"
	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/storetest"
	"github.com/prometheus/client_golang/prometheus"
)

type allCertified struct{}

func (allCertified) Certified(string) bool { return true }

type cleanScanner struct{}

func (cleanScanner) Scan(context.Context, io.Reader) (string, error) { return "", nil }

// metricValues reads the samples of one metric family from reg, keyed by their label values
// joined with ",".
func metricValues(t *testing.T, reg *prometheus.Registry, name string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			key := ""
			for i, l := range m.GetLabel() {
				if i > 0 {
					key += ","
				}
				key += l.GetValue()
			}
			switch {
			case m.GetCounter() != nil:
				out[key] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[key] = m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				out[key] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

// TestSweepJobMetrics: after a sweep the registry has the notices sent by kind, the sweep's
// duration and the recipients still waiting by state (issue 15 item 4).
func TestSweepJobMetrics(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	st := storetest.NewMemory()
	id := pec.Identity{Name: "Provider A S.p.A.", Domain: "pec-a.test", ServiceAddress: "posta-certificata@pec-a.test", ReceiptAddress: "ricevute@pec-a.test"}
	eng, err := pec.New(pec.Config{Identities: []pec.Identity{id}, Node: "t"}, pec.Deps{Keys: hsmtest.New(t, id.Name, id.Domain),
		Index: allCertified{}, Scanner: cleanScanner{}, Store: st, Clock: pec.ClockFunc(func() time.Time { return now })})
	if err != nil {
		t.Fatal(err)
	}
	// Four rows: two silent for 13 h (the 12 h notice is due), one taken 1 h ago, one sent 1 h ago.
	b := &store.Batch{}
	for i, sent := range []time.Time{now.Add(-13 * time.Hour), now.Add(-13 * time.Hour), now.Add(-time.Hour), now.Add(-time.Hour)} {
		d := &daticert.Postacert{Tipo: daticert.TipoPostaCertificata, Errore: daticert.ErroreNessuno}
		d.Intestazione.Mittente, d.Intestazione.Risposte = "alice@pec-a.test", "alice@pec-a.test"
		d.Intestazione.Destinatari = []daticert.Destinatario{{Tipo: daticert.Certificato, Addr: "bruno@pec-b.test"}}
		d.Intestazione.Oggetto = daticert.Subject("prova")
		d.Dati = daticert.Dati{GestoreEmittente: id.Name, Data: daticert.Data{Zona: "+0100", Giorno: "02/12/2026", Ora: "12:00:00"},
			Identificativo: "m" + string(rune('0'+i)) + "@pec-a.test", Msgid: "<m@client>", Ricevuta: daticert.Completa}
		b.Track(store.TrackInsert{Identificativo: d.Dati.Identificativo, Recipient: "bruno@pec-b.test", SentAt: sent,
			Sender: "alice@pec-a.test", Subject: "prova", Data: daticert.Marshal(d)})
	}
	b.Apply(store.Transition{Identificativo: "m2@pec-a.test", Recipient: "bruno@pec-b.test", Input: store.InputPresaInCarico, At: now})
	if err := st.Commit(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	d := &Daemon{Cfg: &config.Config{Tracking: config.Tracking{SweepEvery: time.Second}}, Log: slog.New(slog.DiscardHandler),
		Reg: prometheus.NewRegistry(), Store: st, Engine: eng}
	job := d.SweepJob()
	if err := job.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := metricValues(t, d.Reg, "pec_tracking_notices_total"); got["12h,sent"] != 2 || got["24h,sent"] != 0 || got["any,failed"] != 0 {
		t.Errorf("pec_tracking_notices_total %v", got)
	}
	if got := metricValues(t, d.Reg, "pec_tracking_sweep_seconds"); got[""] != 1 {
		t.Errorf("pec_tracking_sweep_seconds observations %v, want 1", got)
	}
	got := metricValues(t, d.Reg, "pec_tracking_open")
	if got["sent"] != 1 || got["taken"] != 1 || got["notified-12h"] != 2 || len(got) != 3 {
		t.Errorf("pec_tracking_open %v, want sent 1, taken 1, notified-12h 2", got)
	}
	// A second sweep: nothing new is due; the counters stay, the gauge follows the store.
	if err := st.Commit(context.Background(), &store.Batch{Transitions: []store.Transition{
		{Identificativo: "m3@pec-a.test", Recipient: "bruno@pec-b.test", Input: store.InputConsegna, At: now}}}); err != nil {
		t.Fatal(err)
	}
	if err := job.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := metricValues(t, d.Reg, "pec_tracking_notices_total"); got["12h,sent"] != 2 {
		t.Errorf("after a second sweep pec_tracking_notices_total %v", got)
	}
	if got := metricValues(t, d.Reg, "pec_tracking_open"); got["sent"] != 0 || got["notified-12h"] != 2 {
		t.Errorf("after a consegna pec_tracking_open %v, want sent 0", got)
	}
}
