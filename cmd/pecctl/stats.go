package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
)

func init() {
	register(command{name: "stats", summary: "figures a provider reports to AgID, per quadrimestre or period", run: runStats})
}

const statsUsage = `usage:
  pecctl stats -config FILE (-quadrimestre YYYY-N | -from D -to D) [-domains a,b] [-passwd FILE] [-format text|json]

  -quadrimestre 2026-3 is September to December 2026 (1: Jan-Apr, 2: May-Aug, 3: Sep-Dec),
  local days of provider.timezone; -to is exclusive.

Figures (all from the legal log of the period unless said otherwise):
  domains         PEC domains served: provider.domains, or -domains
  mailboxes       with -passwd: entries of a Dovecot passwd-file in those domains (the
                  mailboxes that exist); without: distinct addresses of those domains that
                  sent or received in the period (active mailboxes)
  messages_out    messages accepted from our users: distinct identificativi of accettazioni
  messages_in     messages received from providers: distinct identificativi of prese in carico
  virus_in        infected messages found on the way in: rilevazione-virus, and anomalies
                  carrying a virus name (distinct identificativi)
  virus_out       infected messages refused on the way out: non-accettazione per virus
`

// Stats are the AgID figures of one period.
type Stats struct {
	From        string   `json:"from"`
	To          string   `json:"to"`
	Domains     []string `json:"domains"`
	Mailboxes   int      `json:"mailboxes"`
	MailboxFrom string   `json:"mailboxes_source"` // "passwd" or "active"
	MessagesOut int      `json:"messages_out"`
	MessagesIn  int      `json:"messages_in"`
	VirusIn     int      `json:"virus_in"`
	VirusOut    int      `json:"virus_out"`
	Delivered   int      `json:"deliveries"`      // avvenuta consegna issued
	NotDeliv    int      `json:"non_deliveries"`  // mancata consegna issued (incl. virus)
	Refused     int      `json:"non_acceptances"` // non-accettazione (formal)
	Anomalies   int      `json:"anomalies"`       // buste di anomalia
}

// quadrimestre returns the local [from, to) of "YYYY-N".
func quadrimestre(s string, loc *time.Location) (time.Time, time.Time, error) {
	y, n, ok := strings.Cut(s, "-")
	year, err1 := strconv.Atoi(y)
	q, err2 := strconv.Atoi(n)
	if !ok || err1 != nil || err2 != nil || q < 1 || q > 3 || year < 2000 {
		return time.Time{}, time.Time{}, fmt.Errorf("-quadrimestre %q: want YYYY-N with N 1, 2 or 3", s)
	}
	from := time.Date(year, time.Month(1+4*(q-1)), 1, 0, 0, 0, 0, loc)
	return from, from.AddDate(0, 4, 0), nil
}

func inDomains(addr string, domains []string) bool {
	_, d, ok := strings.Cut(strings.ToLower(addr), "@")
	if !ok {
		return false
	}
	for _, x := range domains {
		if d == strings.ToLower(x) {
			return true
		}
	}
	return false
}

// countPasswd counts the users of a Dovecot passwd-file ("user@domain:{scheme}...") in domains.
func countPasswd(path string, domains []string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		user, _, _ := strings.Cut(l, ":")
		if inDomains(user, domains) {
			seen[strings.ToLower(user)] = true
		}
	}
	return len(seen), sc.Err()
}

func computeStats(ctx context.Context, st store.Store, from, to time.Time, domains []string) (*Stats, error) {
	s := &Stats{Domains: domains, MailboxFrom: "active"}
	sets := map[store.EventKind]map[string]bool{}
	count := func(k store.EventKind, id string) {
		if sets[k] == nil {
			sets[k] = map[string]bool{}
		}
		sets[k][id] = true
	}
	active := map[string]bool{}
	var virusIn = map[string]bool{}
	err := st.ScanLog(ctx, store.Query{From: from, To: to}, func(e *store.Event) error {
		count(e.Kind, e.Identificativo)
		if e.Kind == store.KindRilevazioneVirus || (e.Kind == store.KindAnomalia || e.Kind == store.KindBustaAnomalia) && e.Virus != "" {
			virusIn[e.Identificativo] = true
		}
		for _, a := range append([]string{e.Sender}, e.Addresses()...) {
			if inDomains(a, domains) {
				active[strings.ToLower(a)] = true
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	n := func(k store.EventKind) int { return len(sets[k]) }
	s.Mailboxes = len(active)
	s.MessagesOut, s.MessagesIn = n(store.KindAccettazione), n(store.KindPresaInCarico)
	s.VirusIn, s.VirusOut = len(virusIn), n(store.KindNonAccettazioneVirus)
	s.Delivered, s.NotDeliv = n(store.KindConsegna), n(store.KindMancataConsegna)+n(store.KindMancataConsegnaVirus)
	s.Refused, s.Anomalies = n(store.KindNonAccettazione), n(store.KindBustaAnomalia)
	return s, nil
}

// (Long on purpose: flag parsing and the report of one command.)
func runStats(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("stats", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "", "configuration `file`")
	db := fs.String("db", "", "store `location`: sqlite:PATH, postgres:DSN, a postgres:// URL or a SQLite path (overrides store:)")
	quad := fs.String("quadrimestre", "", "period `YYYY-N`")
	fromS := fs.String("from", "", "period start `YYYY-MM-DD`")
	toS := fs.String("to", "", "period end (exclusive) `YYYY-MM-DD`")
	doms := fs.String("domains", "", "PEC domains, comma separated (default provider.domains)")
	passwd := fs.String("passwd", "", "Dovecot passwd-`file` to count existing mailboxes")
	format := fs.String("format", "text", "text or json")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 || (*quad == "") == (*fromS == "" && *toS == "") {
		fmt.Fprint(stderr, statsUsage)
		return 2
	}
	fail := func(err error) int { fmt.Fprintln(stderr, "pecctl stats:", err); return 1 }
	f, err := readLogFile(*config, *db)
	if err != nil {
		return fail(err)
	}
	var from, to time.Time
	if *quad != "" {
		from, to, err = quadrimestre(*quad, f.loc)
	} else {
		if from, err = parseTime(*fromS, f.loc); err == nil {
			to, err = parseTime(*toS, f.loc)
		}
		if err == nil && (from.IsZero() || to.IsZero() || !to.After(from)) {
			err = errors.New("-from and -to must both be set, -to after -from")
		}
	}
	if err != nil {
		return fail(err)
	}
	domains := f.Provider.Domains
	if *doms != "" {
		domains = strings.Split(*doms, ",")
	}
	if len(domains) == 0 {
		return fail(errors.New("no PEC domains: set provider.domains or -domains"))
	}
	st, err := f.open()
	if err != nil {
		return fail(err)
	}
	defer st.Close()
	s, err := computeStats(context.Background(), st, from, to, domains)
	if err != nil {
		return fail(err)
	}
	s.From, s.To = from.Format("2006-01-02"), to.Format("2006-01-02")
	if *passwd != "" {
		if s.Mailboxes, err = countPasswd(*passwd, domains); err != nil {
			return fail(err)
		}
		s.MailboxFrom = "passwd"
	}
	if *format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(s); err != nil {
			return fail(err)
		}
		return 0
	}
	fmt.Fprintf(stdout, "period            %s to %s (exclusive)\n", s.From, s.To)
	fmt.Fprintf(stdout, "PEC domains       %d (%s)\n", len(s.Domains), strings.Join(s.Domains, ", "))
	fmt.Fprintf(stdout, "mailboxes         %d (%s)\n", s.Mailboxes, s.MailboxFrom)
	fmt.Fprintf(stdout, "messages out      %d\n", s.MessagesOut)
	fmt.Fprintf(stdout, "messages in       %d\n", s.MessagesIn)
	fmt.Fprintf(stdout, "viruses in        %d\n", s.VirusIn)
	fmt.Fprintf(stdout, "viruses out       %d\n", s.VirusOut)
	fmt.Fprintf(stdout, "deliveries        %d\n", s.Delivered)
	fmt.Fprintf(stdout, "non-deliveries    %d\n", s.NotDeliv)
	fmt.Fprintf(stdout, "non-acceptances   %d\n", s.Refused)
	fmt.Fprintf(stdout, "anomalies         %d\n", s.Anomalies)
	return 0
}
