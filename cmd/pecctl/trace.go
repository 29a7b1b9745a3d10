package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
)

func init() {
	register(command{name: "trace", summary: "the whole story of one PEC transaction (or of a sender's since a date)", run: runTrace})
}

const traceUsage = `usage: pecctl trace [-config FILE | -db STORE] [--json] IDENTIFICATIVO
       pecctl trace [-config FILE | -db STORE] [--json] --msgid '<client-message-id>' [--since DATE]
       pecctl trace [-config FILE | -db STORE] [--json] --from ADDRESS --since DATE

Prints every event of a transaction in order (accepted, bustas out, prese in carico,
consegne, notices, anomalies), with the Postfix queue ids and the generated messages, and the
state of each certified recipient at the sender's provider (tracking for the 12 h / 24 h
notices; external recipients are shown as such and never tracked): the answer to "did my PEC
arrive?". --msgid finds the transaction of a client's Message-ID (scanning the log since
--since, default 30 days ago); --from lists every transaction of a sender since a date.

flags:
`

// story is one transaction as pecctl trace tells it (also the --json output).
type story struct {
	Identificativo string           `json:"identificativo"`
	Sender         string           `json:"sender"`
	Subject        string           `json:"subject"`
	MessageID      string           `json:"message_id,omitempty"`
	Recipients     []storyRecipient `json:"recipients"`
	Events         []*store.Event   `json:"events"`
}

type storyRecipient struct {
	Address     string     `json:"address"`
	Type        string     `json:"type"`            // certificato, esterno
	State       string     `json:"state,omitempty"` // tracking state at the sender's provider, "" when not tracked here
	TakenAt     *time.Time `json:"presa_in_carico,omitempty"`
	DeliveredAt *time.Time `json:"consegna,omitempty"`
	FailedAt    *time.Time `json:"mancata_consegna,omitempty"`
	Notice12At  *time.Time `json:"preavviso_12h,omitempty"`
	Notice24At  *time.Time `json:"avviso_24h,omitempty"`
}

// (Long on purpose: flag parsing, the three ways to name a transaction, and the report.)
func runTrace(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("trace", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, traceUsage); fs.PrintDefaults() }
	config := fs.String("config", "", "configuration `file`")
	db := fs.String("db", "", "store `location` (overrides store:)")
	asJSON := fs.Bool("json", false, "JSON output, one object per transaction")
	msgid := fs.String("msgid", "", "the client's Message-ID, with angle brackets")
	from := fs.String("from", "", "every transaction of this sender `address`")
	since := fs.String("since", "", "with --from or --msgid: since `T` (YYYY-MM-DD or RFC 3339)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return 2
	}
	modes := 0
	for _, on := range []bool{len(pos) == 1, *msgid != "", *from != ""} {
		if on {
			modes++
		}
	}
	if modes != 1 || len(pos) > 1 || (*from != "" && *since == "") {
		fs.Usage()
		return 2
	}
	f, err := readLogFile(*config, *db)
	if err != nil {
		fmt.Fprintf(stderr, "pecctl trace: %v\n", err)
		return 1
	}
	st, err := f.open()
	if err != nil {
		fmt.Fprintf(stderr, "pecctl trace: %v\n", err)
		return 1
	}
	defer st.Close()
	start, err := parseTime(*since, f.loc)
	if err != nil {
		fmt.Fprintf(stderr, "pecctl trace: --since %v\n", err)
		return 2
	}
	if start.IsZero() {
		start = time.Now().AddDate(0, 0, -30)
	}
	ctx := context.Background()
	id := ""
	if len(pos) == 1 {
		id = pos[0]
	}
	ids, err := traceIDs(ctx, st, id, *msgid, *from, start)
	if err != nil {
		fmt.Fprintf(stderr, "pecctl trace: %v\n", err)
		return 1
	}
	if len(ids) == 0 {
		fmt.Fprintln(stderr, "pecctl trace: no such transaction in the log")
		return 1
	}
	for _, id := range ids {
		s, err := tell(ctx, st, id)
		if err != nil {
			fmt.Fprintf(stderr, "pecctl trace: %v\n", err)
			return 1
		}
		if len(s.Events) == 0 && len(s.Recipients) == 0 {
			fmt.Fprintf(stderr, "pecctl trace: %s: no such transaction in the log\n", id)
			return 1
		}
		if *asJSON {
			b, _ := json.Marshal(s)
			fmt.Fprintln(stdout, string(b))
		} else {
			writeStory(stdout, s, f.loc)
		}
	}
	return 0
}

// traceIDs resolves the identificativi a trace asks for, in order of first appearance.
func traceIDs(ctx context.Context, st store.Store, id, msgid, from string, since time.Time) ([]string, error) {
	if id != "" {
		return []string{strings.Trim(id, "<>")}, nil
	}
	q := store.Query{From: since, Sender: from}
	seen := map[string]bool{}
	var ids []string
	err := st.ScanLog(ctx, q, func(e *store.Event) error {
		if msgid != "" && e.MessageID != msgid {
			return nil
		}
		if e.Identificativo != "" && !seen[e.Identificativo] {
			seen[e.Identificativo] = true
			ids = append(ids, e.Identificativo)
		}
		return nil
	})
	return ids, err
}

// tell collects the events and tracking rows of one identificativo.
func tell(ctx context.Context, st store.Store, id string) (*story, error) {
	s := &story{Identificativo: id}
	err := st.ScanLog(ctx, store.Query{Identificativo: id}, func(e *store.Event) error {
		s.Events = append(s.Events, e)
		if s.Sender == "" && e.Sender != "" {
			s.Sender, s.Subject, s.MessageID = e.Sender, e.Subject, e.MessageID
		}
		if len(s.Recipients) == 0 {
			for _, r := range e.Recipients {
				s.Recipients = append(s.Recipients, storyRecipient{Address: r.Addr, Type: string(r.Type)})
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	rows, err := st.Tracking(ctx, id)
	if err != nil {
		return nil, err
	}
	for _, row := range rows {
		i := len(s.Recipients)
		for j := range s.Recipients {
			if strings.EqualFold(s.Recipients[j].Address, row.Recipient) {
				i = j
			}
		}
		if i == len(s.Recipients) {
			s.Recipients = append(s.Recipients, storyRecipient{Address: row.Recipient, Type: string(store.Certified)})
		}
		r := &s.Recipients[i]
		r.State = string(row.State)
		r.TakenAt, r.DeliveredAt, r.FailedAt = when(row.TakenAt), when(row.DeliveredAt), when(row.FailedAt)
		r.Notice12At, r.Notice24At = when(row.Notice12At), when(row.Notice24At)
	}
	return s, nil
}

func when(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func writeStory(w io.Writer, s *story, loc *time.Location) {
	fmt.Fprintf(w, "transaction %s\n  from %s, subject %q", s.Identificativo, s.Sender, s.Subject)
	if s.MessageID != "" {
		fmt.Fprintf(w, ", client Message-ID %s", s.MessageID)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "  recipients:")
	for _, r := range s.Recipients {
		state := "not tracked here (external: no receipt can come back)"
		if r.Type == string(store.Certified) {
			state = "not tracked here (a transaction of another provider)"
		}
		if r.State != "" {
			state = r.State
			for _, x := range []struct {
				label string
				at    *time.Time
			}{{"presa in carico", r.TakenAt}, {"consegna", r.DeliveredAt}, {"mancata consegna", r.FailedAt},
				{"preavviso 12 h", r.Notice12At}, {"avviso 24 h", r.Notice24At}} {
				if x.at != nil {
					state += fmt.Sprintf("; %s %s", x.label, x.at.In(loc).Format("2006-01-02 15:04:05"))
				}
			}
		}
		fmt.Fprintf(w, "    %-40s %-12s %s\n", r.Address, r.Type, state)
	}
	fmt.Fprintln(w, "  events:")
	for _, e := range s.Events {
		fmt.Fprintf(w, "    %s  %-24s", e.Time.In(loc).Format("2006-01-02 15:04:05 -0700"), e.Kind)
		for _, kv := range [][2]string{{"about", strings.Join(e.About, ", ")}, {"queue", e.QueueID}, {"errore", e.Error},
			{"detail", e.ErrorDetail}, {"virus", e.Virus}, {"generated", strings.Join(e.Generated, ", ")}} {
			if kv[1] != "" && kv[1] != "nessuno" {
				fmt.Fprintf(w, "  %s=%s", kv[0], kv[1])
			}
		}
		fmt.Fprintln(w)
	}
}
