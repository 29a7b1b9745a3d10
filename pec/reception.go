package pec

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"sort"
	"strings"
	"time"

	"github.com/gestore-pec/gestore/pec/inspect"
)

// The reception point (punto di ricezione, RFC 6109 §2.2.2, §3.2; pec-spec.md §2.2-2.6, §7.2):
// everything that reaches the provider's MX. Receive classifies the message and verifies it
// (Classify and Trust: signature, signer in the index, chain at the signing time, revocation,
// formal correctness, managed domains), then:
//
//   - a valid busta di trasporto: one ricevuta di presa in carico per SMTP transaction, listing
//     our recipients of that transaction, to the sending provider's mailReceipt, held in the
//     store until Postfix proves it queued the busta (confirm.go), after a clean virus scan;
//     an infected busta is not delivered: one avviso di rilevazione virus per local recipient
//     and the busta in quarantine (reception_busta.go);
//   - a valid receipt or notice: delivered unchanged, the tracking of its transaction moved;
//     a presa in carico or rilevazione virus only to our service mailbox (reception_receipt.go);
//   - anything else (ordinary mail, DSN and MDN, unsigned or unlisted or failing messages): by
//     policy wrapped in a busta di anomalia signed by us, or refused; infected, refused. No
//     receipt ever goes to an ordinary sender (reception_other.go).
//
// Same-provider mail takes the same path (DM 2/11/2005 art. 6 c.5, RFC 6109 §3.4): Postfix
// sends mail for our own domains that did not come in through the MX (bustas from the access
// point, receipts from the reinjection listener) through the MX first (postfix-conf/README.md,
// "Same provider").

// Classes of an incoming message (a bounded set: metrics and logs).
const (
	ClassBusta    = "busta"    // a valid busta di trasporto
	ClassReceipt  = "ricevuta" // a valid ricevuta or avviso
	ClassOrdinary = "ordinaria"
	ClassInvalid  = "non-valida" // claims to be PEC (headers, signature, daticert) and fails a check
	ClassRelay    = "relay"      // none of our recipients (mynetworks relaying through the MX)
)

// Outcome labels of the reception point, besides those of errors.go.
const (
	OutcomeAnomaly   = "anomaly"   // wrapped in a busta di anomalia and delivered
	OutcomeDuplicate = "duplicate" // a retry of a busta already queued: discarded, nothing new
	OutcomeRelayed   = "relayed"   // not for us: passed unchanged
)

// Incoming is one SMTP transaction at the reception point, as the milter saw it at
// end-of-message.
type Incoming struct {
	QueueID  string   // Postfix queue id, for logs only
	MailFrom string   // envelope sender, without angle brackets ("" for a null sender)
	Rcpts    []string // envelope recipients, in RCPT order
	Message  []byte   // the message as received (header fields and body), CRLF line ends
}

// Received is the outcome of Receive: what the milter does with the transaction.
type Received struct {
	Class          string
	Outcome        string
	Kind           Kind   // the kind the message claims (KindOrdinary when none)
	Identificativo string // of a valid busta or receipt
	Reason         string // why the message is not a valid PEC message: a bounded code
	Detail         string // the finding behind Reason, one line, for logs
	Local          []string
	// Confirm is the confirmation recipient to add (NOTIFY=NEVER): its delivery releases the
	// presa in carico held in the store (confirm.go).
	Confirm string
	// Replace, when set, replaces the message (the busta di anomalia); the envelope stays.
	Replace [][]byte
	// Discard: accept and drop (an infected busta, a retry of a busta already queued).
	Discard bool
	Retry   bool // a retry of an earlier transaction (same identificativo and recipients)
	// Redirect is our service mailbox: a presa in carico or rilevazione virus goes there, never
	// to a user (RFC 6109 §2.2.5); Drop are the envelope recipients it replaces.
	Redirect string
	Drop     []string
	Virus    string
	// Flags are the content flags the sending provider's access point set on a valid busta
	// (X-PEC-Macro, X-PEC-Non-Verificato: pec/inspect), "Field: value" joined by "; ". They are
	// kept on the busta as delivered and recorded in the log (issue 16 item 4).
	Flags   string
	Timings ReceiveTimings
}

// ReceiveTimings says where the time of one Receive went.
type ReceiveTimings struct {
	Verify time.Duration // classification and trust check
	Scan   time.Duration
	Scans  int // streams sent to clamd: 2 when postacert.eml was scanned apart (scanReceived)
	Build  time.Duration
	Commit time.Duration
}

// LogValue renders the timings in milliseconds.
func (t ReceiveTimings) LogValue() slog.Value {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return slog.GroupValue(slog.Float64("verify_ms", ms(t.Verify)), slog.Float64("scan_ms", ms(t.Scan)), slog.Int("scans", t.Scans),
		slog.Float64("build_ms", ms(t.Build)), slog.Float64("commit_ms", ms(t.Commit)))
}

// Receive processes one transaction at the reception point (see the top of this file). It
// returns what to do with the message, a *Rejected when it must be refused at SMTP level
// (policy reject, infected ordinary mail), or a temporary error (the signer, the store, the
// antivirus, a stale providers index, an unknown revocation status): nothing was committed and
// Postfix's client retries (DESIGN.md "Durability").
func (e *Engine) Receive(ctx context.Context, in *Incoming) (*Received, error) {
	if e.deps.Trust == nil {
		return nil, &Temporary{Op: "trust", Err: errors.New("no trust check configured (trust.anchors)")}
	}
	local := e.localRcpts(in.Rcpts)
	raw := ToCRLF(in.Message)
	v, err := e.verify(ctx, raw)
	if err != nil {
		return nil, err
	}
	if e.foreignRcpts(in.Rcpts) && !e.ownSigned(v) {
		// Only the pec-loop listener relays (for mynetworks: a busta of ours for our users and
		// another provider's comes there whole; postfix-conf master.cf); the MX refuses other
		// domains. What leaves for another domain through a reception point must be a valid
		// message this provider signed, or a local process could send unsigned mail out as
		// anyone.
		return nil, &Rejected{Class: ClassRelay, Reason: "relay-not-ours", Detail: "recipients in other domains for a message this provider did not sign"}
	}
	if len(local) == 0 {
		return &Received{Class: ClassRelay, Outcome: OutcomeRelayed, Kind: v.c.Kind}, nil
	}
	r := &reception{e: e, in: in, raw: raw, local: local, v: v}
	var res *Received
	switch v.class {
	case ClassBusta:
		res, err = r.busta(ctx)
	case ClassReceipt:
		res, err = r.receipt(ctx)
	default:
		res, err = r.other(ctx)
	}
	if res != nil {
		res.Class, res.Local, res.Timings.Verify = v.class, local, v.took
		if v.class == ClassBusta {
			res.Flags = contentFlags(v.c)
		}
		if res.Kind == KindOrdinary {
			res.Kind = v.c.Kind
		}
	}
	return res, err
}

// reception is one transaction being decided.
type reception struct {
	e     *Engine
	in    *Incoming
	raw   []byte
	local []string
	v     *verdict
	tm    ReceiveTimings
}

// localRcpts are the envelope recipients in our PEC domains, without duplicates and without
// confirmation recipients (those of a same-provider busta looped through the MX belong to the
// access point's step).
func (e *Engine) localRcpts(rcpts []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range rcpts {
		if e.IsConfirmation(r) || seen[foldAddr(r)] {
			continue
		}
		if _, ok := e.IdentityFor(r); ok {
			seen[foldAddr(r)] = true
			out = append(out, r)
		}
	}
	return out
}

// contentFlags reads the content flags on a busta's top-level header: unsigned, so information
// from the sending provider rather than proof (pec/inspect/report.go).
func contentFlags(c *Classified) string {
	var out []string
	for _, name := range []string{inspect.HeaderMacro, inspect.HeaderUnchecked} {
		if v, ok := c.Header.Get(name); ok && strings.TrimSpace(v) != "" {
			out = append(out, name+": "+strings.TrimSpace(v))
		}
	}
	return strings.Join(out, "; ")
}

// foreignRcpts reports whether an envelope recipient is in none of our PEC domains and is not a
// confirmation recipient.
func (e *Engine) foreignRcpts(rcpts []string) bool {
	for _, r := range rcpts {
		if _, ok := e.IdentityFor(r); !ok && !e.IsConfirmation(r) {
			return true
		}
	}
	return false
}

// ownSigned reports whether v is a valid PEC message (busta or receipt) signed with the
// certificate of one of our identities.
func (e *Engine) ownSigned(v *verdict) bool {
	if v.reason != "" || v.trust == nil || v.trust.Signer == nil || (v.class != ClassBusta && v.class != ClassReceipt) {
		return false
	}
	for _, id := range e.cfg.Identities {
		if _, chain, err := e.deps.Keys.SignerFor(id.Domain); err == nil && len(chain) > 0 && chain[0].Equal(v.trust.Signer) {
			return true
		}
	}
	return false
}

// foldAddr compares our own recipients: CanonAddr, and the local part folded too, which only
// the receiving system may do (RFC 5321 §2.4) and we are it.
func foldAddr(a string) string { return strings.ToLower(CanonAddr(a)) }

// verdict is what the reception point found a message to be (pec-spec.md §7.2).
type verdict struct {
	c      *Classified
	trust  *TrustResult // nil when the trust check did not run (not a PEC message, unsigned)
	class  string
	reason string // why it is not valid: a bounded code; "" when valid
	detail string // the finding, one line
	took   time.Duration
}

// verify classifies raw and runs the trust check on what claims to be PEC. Its only errors are
// temporary: an unknown revocation status, or a signer not in a stale copy of the index.
func (e *Engine) verify(ctx context.Context, raw []byte) (*verdict, error) {
	start := time.Now()
	c := Classify(raw, ClassifyOptions{})
	v := &verdict{c: c}
	defer func() { v.took = time.Since(start) }()
	switch {
	case c.Kind == KindOrdinary:
		v.class = ClassOrdinary
		v.reason, v.detail = ordinaryReason(c)
		if v.reason != "ordinary" && v.reason != "dsn" && v.reason != "mdn" {
			v.class = ClassInvalid // unknown X-Ricevuta / X-Trasporto values, unparsable header
		}
		return v, nil
	case c.Kind == KindAnomalia:
		// A busta di anomalia is made by the recipient's own reception point and never
		// travels between providers (RFC 6109 §3.2.2): from outside it certifies nothing.
		v.class, v.reason, v.detail = ClassInvalid, "anomalia", "a busta di anomalia arrived from outside"
		return v, nil
	case !c.Signed:
		// pec-spec.md §7.2 step 1: PEC headers (X-Ricevuta, X-Trasporto) on an unsigned message.
		v.class, v.reason, v.detail = ClassInvalid, "pec-headers-unsigned", "PEC header fields on a message without signature"
		return v, nil
	}
	tr, err := e.deps.Trust.Check(ctx, raw, c)
	if err != nil {
		return nil, err
	}
	v.trust = tr
	if f := firstError(tr.Findings); f != nil {
		if (f.Code == "signer-unlisted" || f.Code == "signer-cert-mismatch") && e.indexStale() {
			// The local copy of the index is older than the rules allow (RFC 6109 §4.5, a daily
			// refresh): a signer missing from it may be a provider added since. Defer rather
			// than turn certified mail into an anomaly.
			return nil, &Temporary{Op: "index", Err: fmt.Errorf("providers index copy is stale and the signer is not in it: %s", f.Message)}
		}
		v.class, v.reason, v.detail = ClassInvalid, f.Code, f.Message
		return v, nil
	}
	if f := firstError(c.Deviations); f != nil {
		v.class, v.reason, v.detail = ClassInvalid, f.Code, f.Where+": "+f.Message
		return v, nil
	}
	if code, msg := aboutManaged(c, tr); code != "" {
		v.class, v.reason, v.detail = ClassInvalid, code, msg
		return v, nil
	}
	v.class = ClassReceipt
	if c.Kind == KindBusta {
		v.class = ClassBusta
	}
	return v, nil
}

// indexStale reports whether the providers index says its copy is stale (igpec.Index.Stale).
func (e *Engine) indexStale() bool {
	s, ok := e.deps.Index.(interface{ Stale() bool })
	return ok && s.Stale()
}

func firstError(ds []Deviation) *Deviation {
	for i := range ds {
		if ds[i].Severity == Error {
			return &ds[i]
		}
	}
	return nil
}

// ordinaryReason tells ordinary mail from a DSN or an MDN of an ordinary MTA (pec-spec.md §7.4:
// "ANOMALIA MESSAGGIO: Undelivered Mail Returned to Sender"), or names the error that kept a
// message from being classified.
func ordinaryReason(c *Classified) (code, detail string) {
	if f := firstError(c.Deviations); f != nil {
		return f.Code, f.Where + ": " + f.Message
	}
	ct, _ := c.Header.Get("Content-Type")
	if mt, params, err := mime.ParseMediaType(ct); err == nil && mt == "multipart/report" {
		switch strings.ToLower(params["report-type"]) {
		case "delivery-status":
			return "dsn", "delivery status notification (RFC 3464) of an ordinary mail system"
		case "disposition-notification":
			return "mdn", "message disposition notification (RFC 8098) of an ordinary mail system"
		}
	}
	if c.Signed {
		return "ordinary", "signed mail without PEC header fields (not a PEC message)"
	}
	return "ordinary", "ordinary mail (no signature, no PEC header fields)"
}

// aboutManaged checks the receipts of the recipient's provider (presa in carico, avvenuta and
// mancata consegna, rilevazione virus): the recipients they are about must be in the signer's
// managedDomains. INFERENCE (pec-spec.md §7.2 step 4, §9.3 step 4): only a recipient's provider
// can say it took charge of or delivered to that recipient; a listed provider speaking for
// another's users would move our tracking.
func aboutManaged(c *Classified, tr *TrustResult) (code, detail string) {
	if tr.Provider == nil || c.Daticert == nil || signedBySenderProvider(c.Kind) || c.Kind == KindBusta {
		return "", ""
	}
	for _, a := range about(c) {
		if d := addrDomain(a); d == "" || !tr.Provider.Manages(d) {
			return "recipient-domain-unmanaged", fmt.Sprintf("%s speaks for %q, not in a managed domain of %s", c.Kind, a, tr.Provider)
		}
	}
	return "", ""
}

// about lists the recipients a receipt is about: the ricezione of a presa in carico, the
// consegna of the others (pec-spec.md §5.2).
func about(c *Classified) []string {
	if c.Daticert == nil {
		return nil
	}
	if c.Kind == KindPresaInCarico {
		return c.Daticert.Dati.Ricezione
	}
	if a := strings.TrimSpace(c.Daticert.Dati.Consegna); a != "" {
		return []string{a}
	}
	return nil
}

// receptionKey identifies a busta across the sending MTA's retries: the signer, the
// identificativo and our recipients of the transaction. A retry with the same recipients finds
// the first outcome; a later transaction for other recipients is a new one with its own presa
// in carico (one per SMTP transaction, RFC 6109 §3.2.1).
func receptionKey(signer []byte, id string, local []string) string {
	rs := make([]string, len(local))
	for i, r := range local {
		rs[i] = foldAddr(r)
	}
	sort.Strings(rs)
	h := sha256.New()
	sum := sha256.Sum256(signer)
	h.Write([]byte("reception\x00"))
	h.Write(sum[:])
	h.Write([]byte("\x00" + id + "\x00" + strings.Join(rs, ",")))
	return hex.EncodeToString(h.Sum(nil))
}
