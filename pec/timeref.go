package pec

import (
	"fmt"
	"sync"
	"time"
	_ "time/tzdata" // Europe/Rome must resolve on minimal systems without /usr/share/zoneinfo

	"github.com/gestore-pec/gestore/pec/daticert"
)

// Clock gives the current time; tests inject a fixed one.
type Clock interface{ Now() time.Time }

// ClockFunc adapts a function to Clock.
type ClockFunc func() time.Time

// Now calls f.
func (f ClockFunc) Now() time.Time { return f() }

// SystemClock is the real clock.
var SystemClock Clock = ClockFunc(time.Now)

var (
	romeOnce sync.Once
	rome     *time.Location
)

// Rome is Europe/Rome, the legal time of the readable texts and daticert (pec-spec.md §6.2).
// The embedded tzdata makes it available everywhere.
func Rome() *time.Location {
	romeOnce.Do(func() {
		l, err := time.LoadLocation("Europe/Rome")
		if err != nil {
			panic("pec: Europe/Rome unavailable despite embedded tzdata: " + err.Error())
		}
		rome = l
	})
	return rome
}

// TimeRef is the single time reference of one processing step (DM art. 9; pec-spec.md §6.2):
// the daticert data, the readable text and the Date header of every message emitted by that
// step render the same instant, to the second.
type TimeRef struct {
	t time.Time
}

// NewTimeRef truncates t to the second and renders it in loc (Europe/Rome when nil).
func NewTimeRef(t time.Time, loc *time.Location) TimeRef {
	if loc == nil {
		loc = Rome()
	}
	return TimeRef{t: t.Truncate(time.Second).In(loc)}
}

// Time is the instant.
func (r TimeRef) Time() time.Time { return r.t }

// Giorno is dd/mm/yyyy.
func (r TimeRef) Giorno() string { return r.t.Format("02/01/2006") }

// Ora is hh:mm:ss, 24 h.
func (r TimeRef) Ora() string { return r.t.Format("15:04:05") }

// Zona is the offset as +hhmm (real traffic; the RFC's "+hh:mm" ABNF is not used,
// pec-spec.md §6.2 DISCREPANCY).
func (r TimeRef) Zona() string { return r.t.Format("-0700") }

// Date is the RFC 5322 Date header value of the same instant.
func (r TimeRef) Date() string { return r.t.Format("Mon, 2 Jan 2006 15:04:05 -0700") }

// Data is the daticert dati/data element.
func (r TimeRef) Data() daticert.Data {
	return daticert.Data{Zona: r.Zona(), Giorno: r.Giorno(), Ora: r.Ora()}
}

// Text is the readable form: "Il giorno dd/mm/yyyy alle ore hh:mm:ss (+hhmm)".
func (r TimeRef) Text() string {
	return fmt.Sprintf("Il giorno %s alle ore %s (%s)", r.Giorno(), r.Ora(), r.Zona())
}
