// Package seal closes each day of the legal log: it exports the day in a canonical form,
// hashes it (SHA-256), chains it to the previous day's seal, signs it (CMS .p7m, with the
// provider's key) and has it timestamped by an RFC 3161 TSA: the daily "marca temporale"
// of DPR 68/2005 art. 10 (pec-spec §6.4, INFERENCE: a qualified RFC 3161 token).
//
// # Canonical export, format "pec-log-seal/1"
//
// UTF-8 text, one JSON object per line, each line ended by "\n" (no "\r"), no blank lines.
// Objects have every key present, keys sorted (byte order), no insignificant whitespace,
// and the characters <, > and & are not escaped. Times are RFC 3339 in UTC with up to
// nanoseconds ("2026-11-20T09:00:00.123456789Z", trailing zeros dropped).
//
// Line 1 is the header:
//
//	{"count":N,"day":"YYYY-MM-DD","first_seq":S,"format":"pec-log-seal/1","last_seq":L,
//	 "prev_day":"YYYY-MM-DD" or "","prev_hash":"<hex SHA-256 of the previous seal's export>" or "",
//	 "provider":"<gestore name>","tz":"Europe/Rome"}
//
// then one line per event whose time reference falls in the local day [00:00, 24:00) of the
// provider's time zone (23 or 25 hours on DST changes), in ascending sequence number:
//
//	{"about":[..],"error":"","error_detail":"","generated":[..],"gestore":"","identificativo":"",
//	 "kind":"","message_id":"","queue_id":"","receipt_type":"","recipients":[{"addr":"","type":""}],
//	 "sender":"","seq":N,"size":N,"subject":"","time":"..","virus":""}
//
// The seal hash is SHA-256 over the whole file; it is the message imprint of the TSA token,
// so `openssl ts -verify -data PEC-<day>.jsonl -in PEC-<day>.tsr -CAfile tsa-ca.pem` checks it
// independently. The .p7m is a CMS SignedData (pec/smime, SHA-256) with the file as its
// content: `openssl cms -verify -binary -inform DER -in PEC-<day>.jsonl.p7m -CAfile <CA>
// -purpose any` checks it and writes the export.
package seal

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
)

// Format names the canonical export format.
const Format = "pec-log-seal/1"

// header is line 1. Fields are declared in key order so encoding/json writes them sorted.
type header struct {
	Count    int64  `json:"count"`
	Day      string `json:"day"`
	FirstSeq int64  `json:"first_seq"`
	Format   string `json:"format"`
	LastSeq  int64  `json:"last_seq"`
	PrevDay  string `json:"prev_day"`
	PrevHash string `json:"prev_hash"`
	Provider string `json:"provider"`
	TZ       string `json:"tz"`
}

// line is one event. Fields are declared in key order.
type line struct {
	About          []string          `json:"about"`
	Error          string            `json:"error"`
	ErrorDetail    string            `json:"error_detail"`
	Generated      []string          `json:"generated"`
	Gestore        string            `json:"gestore"`
	Identificativo string            `json:"identificativo"`
	Kind           string            `json:"kind"`
	MessageID      string            `json:"message_id"`
	QueueID        string            `json:"queue_id"`
	ReceiptType    string            `json:"receipt_type"`
	Recipients     []store.Recipient `json:"recipients"` // Recipient's fields are addr, type: sorted
	Sender         string            `json:"sender"`
	Seq            int64             `json:"seq"`
	Size           int64             `json:"size"`
	Subject        string            `json:"subject"`
	Time           string            `json:"time"`
	Virus          string            `json:"virus"`
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func eventLine(e *store.Event) line {
	return line{
		About: orEmpty(e.About), Error: e.Error, ErrorDetail: e.ErrorDetail, Generated: orEmpty(e.Generated),
		Gestore: e.Gestore, Identificativo: e.Identificativo, Kind: string(e.Kind), MessageID: e.MessageID,
		QueueID: e.QueueID, ReceiptType: e.ReceiptType, Recipients: orEmpty(e.Recipients), Sender: e.Sender,
		Seq: e.Seq, Size: e.Size, Subject: e.Subject, Time: e.Time.UTC().Format(time.RFC3339Nano), Virus: e.Virus,
	}
}

func encode(w io.Writer, v any) error {
	enc := json.NewEncoder(w) // Encode ends each value with "\n"
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// DayBounds returns the instants [start, end) of a local day in loc.
func DayBounds(day string, loc *time.Location) (time.Time, time.Time, error) {
	d, err := time.ParseInLocation("2006-01-02", day, loc)
	if err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("day %q: want YYYY-MM-DD", day)
	}
	return d, d.AddDate(0, 0, 1), nil
}

// PrevDay returns the day before day (YYYY-MM-DD).
func PrevDay(day string) string {
	d, err := time.Parse("2006-01-02", day)
	if err != nil {
		return ""
	}
	return d.AddDate(0, 0, -1).Format("2006-01-02")
}

// Export is one day's canonical export.
type Export struct {
	Data     []byte
	Count    int64
	FirstSeq int64
	LastSeq  int64
}

// export builds the canonical export of day, chained to prev (nil for the first seal).
func export(ctx context.Context, st store.Store, day, provider string, loc *time.Location, prev *store.Seal) (*Export, error) {
	from, to, err := DayBounds(day, loc)
	if err != nil {
		return nil, err
	}
	var body bytes.Buffer
	x := &Export{}
	err = st.ScanLog(ctx, store.Query{From: from, To: to}, func(e *store.Event) error {
		if x.Count == 0 {
			x.FirstSeq = e.Seq
		}
		x.Count++
		x.LastSeq = e.Seq
		return encode(&body, eventLine(e))
	})
	if err != nil {
		return nil, err
	}
	h := header{Count: x.Count, Day: day, FirstSeq: x.FirstSeq, Format: Format, LastSeq: x.LastSeq, Provider: provider, TZ: loc.String()}
	if prev != nil {
		h.PrevDay, h.PrevHash = prev.Day, hex.EncodeToString(prev.Hash)
	}
	var out bytes.Buffer
	if err := encode(&out, h); err != nil {
		return nil, err
	}
	out.Write(body.Bytes())
	x.Data = out.Bytes()
	return x, nil
}

// WriteEvent writes e as one line of the canonical form (sorted keys, UTC time, "\n"), the
// same line the sealed export has. pecctl log export uses it for JSON output.
func WriteEvent(w io.Writer, e *store.Event) error { return encode(w, eventLine(e)) }
