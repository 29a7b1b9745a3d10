package milter

import (
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/d--j/go-milter"

	"github.com/gestore-pec/gestore/pec"
)

// handler is one point's behaviour on a milter connection. The session is role-agnostic: it
// holds the envelope, the exact bytes and the memory budget, and hands them to the handler
// chosen once per connection from {daemon_name}.
type handler interface {
	point() string // the role label of metrics and logs
	buffers() bool // whether the message is collected for end-of-message
	// stream starts the scan of the message while it arrives (nil: scanned at end-of-message).
	stream(x *session) *pec.ScanStream
	endOfMessage(x *session, m milter.Modifier, log *slog.Logger) (*milter.Response, error)
}

// session is one milter connection (one SMTP connection of Postfix). Postfix may run several
// transactions on it; every field below h is per transaction.
type session struct {
	milter.NoOpMilter
	s    *Server
	role string  // {daemon_name}
	h    handler // nil: unknown role, every transaction is temp-failed

	from, login string
	rcpts       []string
	fields      []fieldRef     // original header fields, for deleting them
	perName     map[string]int // fields seen so far per lower-case name
	buf         []byte         // the header as received, CRLF; the whole message after join
	body        [][]byte       // the body chunks as Postfix sent them, kept without a copy
	bodyLen     int            // total length of body
	held        int64          // bytes of buf's capacity and of body accounted in Server.buffered
	sizeHint    int64          // the SIZE the client declared at MAIL FROM (RFC 1870), 0 if none
	copied      int            // bytes of chunks copied in place since the last collection
	tooLarge    bool
	overBudget  bool            // Server.MaxBuffered reached: temp-fail this transaction
	scan        *pec.ScanStream // the antivirus scan fed as the message arrives (streamScan)
	noStream    bool            // the handler declined a stream for this transaction
}

// fieldRef is one original header field: its name and its 1-based index among the fields of
// the same name (case-insensitive), which is how SMFIR_CHGHEADER addresses it.
type fieldRef struct {
	name  string
	index int
}

func (x *session) reset() {
	if x.held > 0 {
		x.s.release(x.held)
		x.held = 0
	}
	x.from, x.login, x.rcpts, x.fields, x.perName, x.tooLarge, x.overBudget = "", "", nil, nil, nil, false, false
	x.sizeHint, x.copied, x.noStream = 0, 0, false
	x.buf, x.body, x.bodyLen = nil, nil, 0 // an idle connection keeps nothing
	x.stopScan()
}

// label is the role of metrics: the handler's point, or "other".
func (x *session) label() string {
	if x.h == nil {
		return "other"
	}
	return x.h.point()
}

func (x *session) collecting() bool { return x.h != nil && x.h.buffers() }

func (x *session) Connect(_, _ string, _ uint16, _ string, m milter.Modifier) (*milter.Response, error) {
	x.role = m.Get(milter.MacroDaemonName)
	x.h = x.s.handlers[x.role]
	return milter.RespContinue, nil
}

func (x *session) MailFrom(from, esmtpArgs string, m milter.Modifier) (*milter.Response, error) {
	x.reset()
	x.from = milter.RemoveAngle(from)
	x.sizeHint = declaredSize(esmtpArgs)
	x.login = m.Get(milter.MacroAuthAuthen)
	if x.h == nil {
		// Misconfiguration: refuse early (4xx), so Postfix keeps nothing it cannot process.
		x.s.log.Error("milter called by a listener with an unknown {daemon_name}: set -o milter_macro_daemon_name=pec-access (submission) or pec-reception (MX) in master.cf",
			"daemon_name", x.role)
		x.s.m.transactions.WithLabelValues(x.label(), outcomeMisconfigure).Inc()
		resp, _ := toResponse(errMisconfigured)
		return resp, nil
	}
	return milter.RespContinue, nil
}

func (x *session) RcptTo(rcpt, _ string, _ milter.Modifier) (*milter.Response, error) {
	x.rcpts = append(x.rcpts, milter.RemoveAngle(rcpt))
	return milter.RespContinue, nil
}

func (x *session) Data(_ milter.Modifier) (*milter.Response, error) {
	return milter.RespContinue, nil
}

// Header rebuilds the field as received. With OptHeaderLeadingSpace Postfix sends the value
// exactly as written after the colon; continuation lines come separated by LF, which is put
// back to CRLF (RFC 5322 §2.2.3 folding, SMTP line ends).
func (x *session) Header(name, value string, _ milter.Modifier) (*milter.Response, error) {
	if !x.collecting() || x.tooLarge || x.overBudget {
		return milter.RespContinue, nil
	}
	if x.perName == nil {
		x.perName = map[string]int{}
	}
	key := strings.ToLower(name)
	x.perName[key]++
	x.fields = append(x.fields, fieldRef{name: name, index: x.perName[key]})
	v := lfToCRLF(value)
	if !x.hold(len(name) + len(v) + 3) {
		return milter.RespContinue, nil
	}
	x.buf = append(append(append(append(x.buf, name...), ':'), v...), '\r', '\n')
	x.checkSize()
	return milter.RespContinue, nil
}

// hold accounts for n bytes about to be written to the header buffer; false (and the
// transaction marked) when the server's memory budget is exhausted. What is accounted is the
// buffer's capacity, not its length (issue 12 item 11: the budget counts what is really held).
func (x *session) hold(n int) bool {
	if x.overBudget {
		return false
	}
	need := len(x.buf) + n
	if need <= cap(x.buf) {
		return true
	}
	// Grow by a quarter (at least 4 KiB): the capacity stays within 25% of the header.
	want := need + max(need/4, 4096)
	if !x.s.reserve(int64(want) - x.held) {
		x.overBudget = true
		x.drop()
		return false
	}
	nb := make([]byte, len(x.buf), want)
	copy(nb, x.buf)
	x.buf = nb
	x.held = int64(want)
	return true
}

func (x *session) Headers(_ milter.Modifier) (*milter.Response, error) {
	if x.collecting() && !x.tooLarge && x.hold(2) {
		x.buf = append(x.buf, '\r', '\n')
		// A client that declared the message's size (RFC 1870 SIZE, as mail clients do) gets
		// a buffer for the whole of it now: the body chunks are written straight into it and
		// the message is never held twice (issue 19, P6: joining the chunks at end-of-message
		// needs them and the joined copy at once). The room is accounted like any buffer;
		// what the declaration does not cover is kept as chunks and joined at the end.
		if x.sizeHint > 0 && x.sizeHint <= x.s.cfg.MaxSize {
			x.room(int(x.sizeHint))
		}
		x.streamScan()
	}
	return milter.RespContinue, nil
}

// room makes the header buffer's capacity the header plus n bytes, if the memory budget has
// room for it (without, the body is kept as chunks as for any client).
func (x *session) room(n int) {
	want := len(x.buf) + n
	if want <= cap(x.buf) || !x.s.reserve(int64(want)-x.held) {
		return
	}
	nb := make([]byte, len(x.buf), want)
	copy(nb, x.buf)
	x.buf, x.held = nb, int64(want)
}

// gcEvery is how many bytes of copied body chunks may pile up before a collection.
const gcEvery = 16 << 20

// declaredSize is the SIZE parameter of MAIL FROM's ESMTP arguments (RFC 1870 §6), 0 when
// absent or invalid.
func declaredSize(args string) int64 {
	for _, a := range strings.Fields(args) {
		k, v, ok := strings.Cut(a, "=")
		if !ok || !strings.EqualFold(k, "SIZE") {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err == nil && n > 0 {
			return n
		}
	}
	return 0
}

// BodyChunk collects the body. Body chunks get no reply (OptNoBodyReply, server.go): a
// message over limits.hard_max_size or the memory budget stops being held here and is refused
// at end-of-message (EndOfMessage), which Postfix sends only once it has the whole message
// anyway.
//
// With the room the client's declared size made (Headers), a chunk is written in place.
// Otherwise the chunks are kept as they came (go-milter reads each packet into its own
// buffer) and joined once, at their exact total size, at end-of-message (join). Issue 19:
// appending them to one growing buffer copied a 100 MB message about five times over (536 MB
// allocated) and held up to 2.25 times it while a copy was under way.
func (x *session) BodyChunk(chunk []byte, _ milter.Modifier) (*milter.Response, error) {
	if !x.collecting() || x.tooLarge || x.overBudget || len(chunk) == 0 {
		return milter.RespContinue, nil
	}
	if len(x.body) == 0 && len(x.buf)+len(chunk) <= cap(x.buf) {
		x.buf = append(x.buf, chunk...) // already accounted (room)
		if x.checkSize(); !x.tooLarge {
			x.feed(x.buf[len(x.buf)-len(chunk):])
		}
		// The chunk copied is garbage now (go-milter reads each packet into a new buffer),
		// and Go's collector would let a whole message of it pile up before its next cycle
		// (the heap goal is twice the live heap, here the message's buffer): collect every
		// gcEvery bytes, so that the pages of the chunks are reused. Cheap: the message's
		// bytes hold no pointers to mark.
		if x.copied += len(chunk); x.copied >= gcEvery {
			x.copied = 0
			runtime.GC()
		}
		return milter.RespContinue, nil
	}
	if !x.s.reserve(int64(len(chunk))) {
		x.overBudget = true
		x.drop()
		return milter.RespContinue, nil
	}
	x.held += int64(len(chunk))
	x.body = append(x.body, chunk)
	x.bodyLen += len(chunk)
	x.checkSize()
	x.feed(chunk)
	return milter.RespContinue, nil
}

// defaultStreamScanFrom: below it the transfer from Postfix is short next to the scan, and
// a message scanned at end-of-message costs one goroutine hand-over less.
const defaultStreamScanFrom = 256 << 10

// streamScan starts the handler's scan of the message while it arrives, once the message is
// past Config.StreamScanFrom (issue 19, P2': Postfix sends a message to the milter only
// after the client's final dot, and at 10 MB that transfer lasts about as long as clamd's
// scan, which now runs alongside it). What was collected so far goes first: the header,
// then the body as it is held, in one buffer (room) or as chunks.
func (x *session) streamScan() {
	if x.scan != nil || x.noStream || x.tooLarge || x.overBudget || x.s.cfg.StreamScanFrom < 0 ||
		int64(len(x.buf)+x.bodyLen) < x.s.cfg.StreamScanFrom {
		return
	}
	if x.scan = x.h.stream(x); x.scan == nil {
		x.noStream = true
		return
	}
	x.scan.Add(x.buf)
	for _, c := range x.body {
		x.scan.Add(c)
	}
}

// feed gives the scan the bytes just collected, or starts it when the message passes
// Config.StreamScanFrom.
func (x *session) feed(p []byte) {
	switch {
	case x.tooLarge || x.overBudget:
	case x.scan != nil:
		x.scan.Add(p)
	default:
		x.streamScan()
	}
}

// stopScan aborts the scan under way, if any.
func (x *session) stopScan() {
	if x.scan != nil {
		x.scan.Close()
		x.scan = nil
	}
}

// join makes the message one buffer for the engine: the header and the body chunks copied
// once into a buffer of the exact size, accounted while both exist. False (and the
// transaction marked over budget) when the budget has no room for the copy.
func (x *session) join() bool {
	if len(x.body) == 0 {
		return true
	}
	n := len(x.buf) + x.bodyLen
	if !x.s.reserve(int64(n)) {
		x.overBudget = true
		x.drop()
		return false
	}
	msg := make([]byte, 0, n)
	msg = append(msg, x.buf...)
	for _, c := range x.body {
		msg = append(msg, c...)
	}
	x.s.release(x.held)
	x.buf, x.body, x.bodyLen, x.held = msg, nil, 0, int64(n)
	if x.scan != nil {
		x.scan.Rebase(msg) // the chunks can go while the scan reads its tail
	}
	return true
}

// refuseBusy temp-fails a transaction that would pass the memory budget: the client retries
// when other large messages are through.
func (x *session) refuseBusy(m milter.Modifier) (*milter.Response, error) {
	resp, outcome := toResponse(errBusy)
	x.s.m.transactions.WithLabelValues(x.label(), outcome).Inc()
	x.s.log.Warn("message temp-failed: milter.max_buffered reached", "queue_id", m.Get(milter.MacroQueueId),
		"role", x.label(), "max_buffered", x.s.cfg.MaxBuffered, "mail_from", x.from)
	x.reset()
	return resp, nil
}

func (x *session) checkSize() {
	if int64(len(x.buf)+x.bodyLen) > x.s.cfg.MaxSize {
		x.tooLarge = true
		x.drop()
	}
}

// drop lets go of a message that will be refused at end-of-message (too large, over the
// budget): its bytes and their place in the budget, at once rather than at its end.
func (x *session) drop() {
	x.stopScan()
	x.buf, x.body, x.bodyLen = nil, nil, 0
	if x.held > 0 {
		x.s.release(x.held)
		x.held = 0
	}
}

func (x *session) refuseTooLarge(m milter.Modifier) (*milter.Response, error) {
	resp, outcome := toResponse(pecTooLarge)
	x.s.m.transactions.WithLabelValues(x.label(), outcome).Inc()
	x.s.log.Info("message refused", "queue_id", m.Get(milter.MacroQueueId), "role", x.label(), "outcome", outcome,
		"error", "message larger than limits.hard_max_size", "limit", x.s.cfg.MaxSize, "mail_from", x.from, "rcpts", len(x.rcpts))
	x.reset()
	return resp, nil
}

func (x *session) Abort(_ milter.Modifier) error {
	x.reset()
	return nil
}

func (x *session) Cleanup(_ milter.Modifier) {
	x.reset()
}

// EndOfMessage hands the transaction to its point's handler, once the adapter's own checks
// (role, size, memory budget, shutdown) have passed.
func (x *session) EndOfMessage(m milter.Modifier) (*milter.Response, error) {
	n := len(x.buf) + x.bodyLen
	defer func() {
		x.reset()
		x.s.afterLarge(n)
	}()
	log := x.s.log.With("queue_id", m.Get(milter.MacroQueueId), "role", x.label())
	switch {
	case x.h == nil:
		resp, _ := toResponse(errMisconfigured)
		return resp, nil
	case x.tooLarge:
		return x.refuseTooLarge(m)
	case x.overBudget, !x.join():
		return x.refuseBusy(m)
	}
	if !x.s.begin() {
		log.Warn("shutting down: transaction temp-failed")
		x.s.m.transactions.WithLabelValues(x.label(), outcomeTempfail).Inc()
		resp, _ := toResponse(errShuttingDown)
		return resp, nil
	}
	defer x.s.inflight.Done()
	if x.scan != nil {
		x.scan.Finish()
	}
	x.s.m.inflight.Inc()
	defer x.s.m.inflight.Dec()
	return x.h.endOfMessage(x, m, log)
}

func (x *session) observe(start time.Time, outcome string) {
	x.s.m.transactions.WithLabelValues(x.label(), outcome).Inc()
	x.s.m.eom.WithLabelValues(x.label()).Observe(time.Since(start).Seconds())
}

// lfToCRLF turns the LF line separators of a milter header value into CRLF.
func lfToCRLF(v string) string {
	if !strings.Contains(v, "\n") {
		return v
	}
	v = strings.ReplaceAll(v, "\r\n", "\n")
	return strings.ReplaceAll(v, "\n", "\r\n")
}
