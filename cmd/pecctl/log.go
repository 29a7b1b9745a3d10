package main

import (
	"context"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gestore-pec/gestore/cmd/internal/config"
	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/seal"
	"github.com/gestore-pec/gestore/pec/store/storeopen"
)

func init() {
	register(command{name: "log", summary: "search, export, extract, seal and verify the legal log", run: runLog})
}

const logUsage = `usage:
  pecctl log search  -config FILE [filters] [-format text|json|csv] [-limit N]
  pecctl log export  -config FILE [filters] -format csv|json [-out FILE]
  pecctl log extract -config FILE -mailbox ADDR [-from T] [-to T] [-format csv|json|text] [-out FILE]
      one user's extract: every event where ADDR is the sender, a recipient or the
      recipient a receipt is about
  pecctl log seal    -config FILE (-day YYYY-MM-DD | -due)
      seal a day (or every day that is over and not sealed): canonical export, SHA-256
      chained to the previous day, CMS signature, RFC 3161 timestamp
  pecctl log verify  -config FILE -day YYYY-MM-DD
      check the chain, the signature, the timestamp and that the log still matches;
      exit 1 naming the day and the changed, missing or added events

filters: -from T -to T (YYYY-MM-DD local day start, or RFC 3339; -to is exclusive),
  -id IDENTIFICATIVO, -sender ADDR, -recipient ADDR, -subject TEXT (substring),
  -kind K[,K...] (accettazione, busta-trasporto, avvenuta-consegna, ...)
-config reads the provider:, signer:, store: and seal: sections; -db overrides store: with
  sqlite:PATH, postgres:DSN, a postgres:// URL or a bare SQLite path.
`

// logFile is the configuration pecctl log and stats read: its provider, signer, store and seal
// sections (strictly decoded by cmd/internal/config), with -db overriding store.dsn.
type logFile struct {
	*config.Config
	loc *time.Location
}

func readLogFile(path, db string) (*logFile, error) {
	f := &logFile{Config: &config.Config{}}
	if path != "" {
		c, err := config.Decode(path)
		if err != nil {
			return nil, err
		}
		f.Config = c
	}
	if db != "" {
		cfg, err := storeopen.Parse(db)
		if err != nil {
			return nil, fmt.Errorf("-db: %w", err)
		}
		f.Store = cfg
	}
	if f.Store.DSN == "" {
		return nil, errors.New("store.dsn: not set (give -config or -db)")
	}
	f.loc = f.Provider.Location
	if f.loc == nil { // no -config: the legal time of the rules
		loc, err := time.LoadLocation("Europe/Rome")
		if err != nil {
			return nil, err
		}
		f.loc = loc
	}
	return f, nil
}

// open opens the store of the configuration (or -db): SQLite or PostgreSQL.
func (f *logFile) open() (store.Store, error) {
	return storeopen.Open(f.Store, nil, nil)
}

func runLog(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, logUsage)
		return 2
	}
	switch args[0] {
	case "search", "export", "extract":
		return logQuery(args[0], args[1:], stdout, stderr)
	case "seal":
		return logSeal(args[1:], stdout, stderr)
	case "verify":
		return logVerify(args[1:], stdout, stderr)
	}
	fmt.Fprint(stderr, logUsage)
	return 2
}

// parseTime reads YYYY-MM-DD (start of that local day) or RFC 3339.
func parseTime(s string, loc *time.Location) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.ParseInLocation("2006-01-02", s, loc); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: want YYYY-MM-DD or RFC 3339", s)
	}
	return t, nil
}

// (Long on purpose: one flag per query field, mapped one to one.)
func logQuery(sub string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("log "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "", "configuration `file`")
	db := fs.String("db", "", "store `location`: sqlite:PATH, postgres:DSN, a postgres:// URL or a SQLite path (overrides store:)")
	from := fs.String("from", "", "events at or after `T`")
	to := fs.String("to", "", "events before `T`")
	id := fs.String("id", "", "identificativo")
	sender := fs.String("sender", "", "sender `address`")
	rcpt := fs.String("recipient", "", "recipient `address`")
	mailbox := fs.String("mailbox", "", "one user's `address` (sender, recipient or receipt subject)")
	subject := fs.String("subject", "", "subject substring")
	kinds := fs.String("kind", "", "event kinds, comma separated")
	limit := fs.Int("limit", 0, "at most `N` events (search default 100)")
	format := fs.String("format", "", "text, json (one canonical JSON object per line) or csv")
	out := fs.String("out", "", "write to `file` instead of standard output")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		fmt.Fprint(stderr, logUsage)
		return 2
	}
	fail := func(err error) int { fmt.Fprintf(stderr, "pecctl log %s: %v\n", sub, err); return 1 }
	if sub == "extract" && *mailbox == "" {
		return fail(errors.New("-mailbox is required"))
	}
	if *format == "" {
		*format = map[string]string{"search": "text", "export": "csv", "extract": "csv"}[sub]
	}
	if sub == "search" && *limit == 0 {
		*limit = 100
	}
	f, err := readLogFile(*config, *db)
	if err != nil {
		return fail(err)
	}
	q := store.Query{Identificativo: *id, Sender: *sender, Recipient: *rcpt, Mailbox: *mailbox, Subject: *subject, Limit: *limit}
	if q.From, err = parseTime(*from, f.loc); err != nil {
		return fail(fmt.Errorf("-from %v", err))
	}
	if q.To, err = parseTime(*to, f.loc); err != nil {
		return fail(fmt.Errorf("-to %v", err))
	}
	if *kinds != "" {
		for _, k := range strings.Split(*kinds, ",") {
			k := store.EventKind(strings.TrimSpace(k))
			if !k.Valid() {
				return fail(fmt.Errorf("-kind: unknown kind %q", k))
			}
			q.Kinds = append(q.Kinds, k)
		}
	}
	w := stdout
	if *out != "" {
		// The legal log is not for other users (issue 12 item 10): 0600, like the store.
		file, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return fail(err)
		}
		defer file.Close()
		w = file
	}
	enc, err := newEventWriter(*format, w, f.loc)
	if err != nil {
		return fail(err)
	}
	st, err := f.open()
	if err != nil {
		return fail(err)
	}
	defer st.Close()
	n := 0
	err = st.ScanLog(context.Background(), q, func(e *store.Event) error { n++; return enc.write(e) })
	if err == nil {
		err = enc.flush()
	}
	if err != nil {
		return fail(err)
	}
	if *out != "" || *format == "text" {
		fmt.Fprintf(stderr, "%d events\n", n)
	}
	return 0
}

type eventWriter struct {
	write func(*store.Event) error
	flush func() error
}

var csvHeader = []string{"seq", "time", "kind", "identificativo", "sender", "recipients", "subject", "message_id",
	"gestore", "receipt_type", "about", "error", "error_detail", "virus", "queue_id", "size", "generated"}

func newEventWriter(format string, w io.Writer, loc *time.Location) (*eventWriter, error) {
	switch format {
	case "json":
		return &eventWriter{write: func(e *store.Event) error { return seal.WriteEvent(w, e) }, flush: func() error { return nil }}, nil
	case "csv":
		cw := csv.NewWriter(w)
		if err := cw.Write(csvHeader); err != nil {
			return nil, err
		}
		return &eventWriter{write: func(e *store.Event) error {
			var rcpts []string
			for _, r := range e.Recipients {
				rcpts = append(rcpts, r.Addr+" ("+string(r.Type)+")")
			}
			return cw.Write([]string{strconv.FormatInt(e.Seq, 10), e.Time.In(loc).Format(time.RFC3339Nano), string(e.Kind),
				e.Identificativo, e.Sender, strings.Join(rcpts, "; "), e.Subject, e.MessageID, e.Gestore, e.ReceiptType,
				strings.Join(e.About, "; "), e.Error, e.ErrorDetail, e.Virus, e.QueueID, strconv.FormatInt(e.Size, 10),
				strings.Join(e.Generated, "; ")})
		}, flush: func() error { cw.Flush(); return cw.Error() }}, nil
	case "text":
		return &eventWriter{write: func(e *store.Event) error {
			_, err := fmt.Fprintln(w, textLine(e, loc))
			return err
		}, flush: func() error { return nil }}, nil
	}
	return nil, fmt.Errorf("-format %q: want text, json or csv", format)
}

// textLine is shaped like a real provider's log line (pec-spec §6.4 [ULIB]).
func textLine(e *store.Event, loc *time.Location) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s seq=%d %s: tipo=%s: mittente=%s: destinatari=", e.Time.In(loc).Format("2006-01-02 15:04:05 -0700"),
		e.Seq, e.Identificativo, e.Kind, e.Sender)
	for i, r := range e.Recipients {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s (%s)", r.Addr, r.Type)
	}
	fmt.Fprintf(&b, ": oggetto=%s", strings.ReplaceAll(e.Subject, "\n", " "))
	for _, kv := range [][2]string{{"queueid", e.QueueID}, {"message-id", e.MessageID}, {"gestore", e.Gestore},
		{"tipo_ricevuta", e.ReceiptType}, {"consegna", strings.Join(e.About, ", ")}, {"errore", e.Error},
		{"errore-esteso", e.ErrorDetail}, {"virus", e.Virus}, {"generati", strings.Join(e.Generated, ", ")}} {
		if kv[1] != "" {
			fmt.Fprintf(&b, ": %s=%s", kv[0], strings.ReplaceAll(kv[1], "\n", " "))
		}
	}
	return b.String()
}
