package main

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// watcher finds the messages a benchmark run delivers into some Maildirs: each poll reads the
// header of the files it has not seen (in new/ and cur/), and keeps those whose Subject has
// the run's token, with the time Dovecot wrote them (the file's modification time).
type watcher struct {
	dirs  []string
	token string
	seen  map[string]bool
	found []arrival
}

// arrival is one delivered message of the run.
type arrival struct {
	mailbox, subject string
	at               time.Time
}

// newWatcher watches the Maildirs of addrs; files already there are ignored.
func newWatcher(base string, ids map[string]string, addrs []string, token string) *watcher {
	w := &watcher{token: token, seen: map[string]bool{}}
	for _, a := range addrs {
		local, dom, _ := strings.Cut(a, "@")
		w.dirs = append(w.dirs, filepath.Join(base, ids[dom], "dovecot", "mail", dom, local, "Maildir"))
	}
	w.poll(false)
	return w
}

// poll reads what is new; keep false only marks the files as seen.
func (w *watcher) poll(keep bool) {
	for _, d := range w.dirs {
		for _, sub := range []string{"new", "cur"} {
			ents, _ := os.ReadDir(filepath.Join(d, sub))
			for _, e := range ents {
				// cur/ names carry flags; Dovecot may give the copies of one delivery to
				// several mailboxes the same name.
				base, _, _ := strings.Cut(e.Name(), ":")
				if w.seen[d+"/"+base] {
					continue
				}
				w.seen[d+"/"+base] = true
				if !keep {
					continue
				}
				p := filepath.Join(d, sub, e.Name())
				subj := subject(p)
				if !strings.Contains(subj, w.token) {
					continue
				}
				info, err := e.Info()
				if err != nil {
					continue
				}
				w.found = append(w.found, arrival{mailbox: d, subject: subj, at: info.ModTime()})
			}
		}
	}
}

// count is how many arrivals have a subject starting with prefix ("" = all).
func (w *watcher) count(prefix string) int {
	n := 0
	for _, a := range w.found {
		if strings.HasPrefix(a.subject, prefix) {
			n++
		}
	}
	return n
}

// subject reads the Subject field of a message file (unfolded).
func subject(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 8192)
	var subj []byte
	in := false
	for {
		line, err := r.ReadBytes('\n')
		t := bytes.TrimRight(line, "\r\n")
		switch {
		case len(t) == 0:
			return string(subj)
		case in && (t[0] == ' ' || t[0] == '\t'):
			subj = append(subj, t...)
		default:
			in = false
			if len(t) > 8 && strings.EqualFold(string(t[:8]), "subject:") {
				subj, in = bytes.TrimSpace(t[8:]), true
			}
		}
		if err != nil {
			return string(subj)
		}
	}
}
