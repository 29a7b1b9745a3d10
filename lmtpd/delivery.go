package lmtpd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gestore-pec/gestore/pec"
)

// The delivery point's LMTP server: Postfix's virtual_transport delivers every PEC mailbox
// here; each transaction is one pec.Engine.BeginDelivery, the message is handed to Dovecot
// for the recipients the engine lists, Dovecot's per-recipient answers go back to the
// engine, and the engine's outcome of each recipient becomes its LMTP reply (RFC 2033 §4.2),
// written only after the engine committed the receipts. No PEC rule lives here.

// Deliverer is what the delivery server needs from the engine.
type Deliverer interface {
	BeginDelivery(ctx context.Context, req *pec.DeliveryRequest) (*pec.Delivery, error)
}

// Mailstore is where messages are stored (Dovecot's LMTP, dovecot.go).
type Mailstore interface {
	Deliver(ctx context.Context, from string, rcpts []string, msg []byte) map[string]pec.MailboxResult
}

// DeliveryConfig tunes the delivery server.
type DeliveryConfig struct {
	// Hostname is the LMTP greeting name.
	Hostname string
	// MaxSize is the largest message accepted (Postfix's message_size_limit). Required.
	MaxSize int64
	// MaxBuffered bounds the message bytes all transactions hold in memory together (each
	// message is held whole: it is verified and may be attached to a completa). A
	// transaction that would pass it gets 451 4.3.0. Default the larger of 4 × MaxSize and
	// 256 MiB.
	MaxBuffered int64
	// Timeout bounds one transaction from the end of the data to the replies (classify,
	// Dovecot, receipts, commit); keep it below the engine's Delivery.Lease. Default 5m.
	Timeout time.Duration
	// MaxRecipients per transaction; default 1000 (Postfix sends at most
	// lmtp_destination_recipient_limit).
	MaxRecipients int
}

// DeliveryDeps are the server's collaborators.
type DeliveryDeps struct {
	Engine     Deliverer
	Mailstore  Mailstore
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// DeliveryServer is the delivery point's LMTP listener.
type DeliveryServer struct {
	cfg DeliveryConfig
	d   DeliveryDeps
	log *slog.Logger
	m   *metrics
	srv *lmtpServer

	mu       sync.Mutex
	buffered int64
}

// NewDeliveryServer validates cfg and builds the server.
func NewDeliveryServer(cfg DeliveryConfig, d DeliveryDeps) (*DeliveryServer, error) {
	switch {
	case d.Engine == nil || d.Mailstore == nil:
		return nil, errors.New("lmtpd: the delivery server needs the engine and the mail store")
	case cfg.MaxSize <= 0:
		return nil, errors.New("lmtpd: MaxSize required")
	}
	if cfg.MaxBuffered == 0 {
		cfg.MaxBuffered = max(4*cfg.MaxSize, 256<<20)
	}
	if cfg.MaxBuffered < cfg.MaxSize {
		return nil, errors.New("lmtpd: MaxBuffered below MaxSize")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Minute
	}
	if cfg.MaxRecipients == 0 {
		cfg.MaxRecipients = 1000
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	s := &DeliveryServer{cfg: cfg, d: d, log: d.Logger.With("component", "delivery")}
	var err error
	if s.m, err = newMetrics(d.Registerer); err != nil {
		return nil, err
	}
	s.srv = newLMTPServer(s, lmtpOptions{hostname: cfg.Hostname, greeting: "LMTP delivery point ready", readTimeout: 10 * time.Minute,
		maxRcpts: cfg.MaxRecipients, maxBytes: cfg.MaxSize}, s.log)
	return s, nil
}

// Serve accepts LMTP connections on ln until Shutdown.
func (s *DeliveryServer) Serve(ln net.Listener) error { return s.srv.serve(ln) }

// Shutdown stops accepting and waits for the transactions under way until ctx ends: each
// finishes, commits its receipts and replies.
func (s *DeliveryServer) Shutdown(ctx context.Context) error { return s.srv.shutdown(ctx) }

// rcpt accepts every recipient: an unknown mailbox of our domains is answered after DATA
// with the avviso di mancata consegna, never refused here (pec-spec.md §7.3). Who may connect
// is the listener's business: pec-lmtpd listens through the daemon kit's guarded listener
// (cmd/internal/daemon/listen.go: SO_PEERCRED users on a unix socket, an address allow-list
// on TCP; DESIGN.md "Trust").
func (s *DeliveryServer) rcpt(string) error { return nil }

// reserve takes n bytes of the memory budget; release gives them back.
func (s *DeliveryServer) reserve(n int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.buffered+n > s.cfg.MaxBuffered {
		return false
	}
	s.buffered += n
	return true
}

func (s *DeliveryServer) release(n int64) {
	s.mu.Lock()
	s.buffered -= n
	s.mu.Unlock()
}

var errBusy = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Too many messages in progress, try again later"}

// data runs one transaction and returns one reply per recipient, each an *smtp.SMTPError
// (250 included, with the engine's text) or an engine error.
func (s *DeliveryServer) data(tx *lmtpTx, body *dataReader) []error {
	msg, reserved, err := s.read(tx, body)
	defer s.release(reserved)
	if err != nil {
		return repeat(err, len(tx.rcpts))
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	start := time.Now()
	qid := queueID(msg)
	d, err := s.d.Engine.BeginDelivery(ctx, &pec.DeliveryRequest{QueueID: qid, MailFrom: tx.from, Rcpts: tx.rcpts, Message: msg})
	if err != nil {
		s.log.Error("delivery not started; Postfix retries", "queue_id", qid, "error", err)
		s.m.deliveries.WithLabelValues(pec.DeliveredTempfail, "none").Add(float64(len(tx.rcpts)))
		return repeat(err, len(tx.rcpts))
	}
	defer d.Abort(ctx)
	if fw := d.Forward(); len(fw) > 0 {
		for rcpt, res := range s.d.Mailstore.Deliver(ctx, tx.from, fw, d.Message()) {
			d.SetResult(rcpt, res)
		}
	}
	log := s.log.With("queue_id", qid, "kind", d.Kind().String(), "message_id", d.MessageID(), "identificativo", d.Identificativo(), "size", len(msg))
	byRcpt := map[string]error{}
	for _, o := range d.Commit(ctx) {
		byRcpt[o.Rcpt] = s.reply(log, o)
	}
	s.m.seconds.Observe(time.Since(start).Seconds())
	out := make([]error, len(tx.rcpts))
	for i, r := range tx.rcpts {
		e, ok := byRcpt[r]
		if !ok {
			e = &pec.Temporary{Op: "delivery", Err: fmt.Errorf("no outcome for %s", r)}
		}
		out[i] = e
	}
	return out
}

func repeat(err error, n int) []error {
	out := make([]error, n)
	for i := range out {
		out[i] = err
	}
	return out
}

// read buffers the message within the memory budget. When the budget is spent, the rest of
// the message is left for the server to skip and every recipient gets 451.
func (s *DeliveryServer) read(tx *lmtpTx, r io.Reader) ([]byte, int64, error) {
	// The declared size gives the buffer at once (Postfix sends SIZE= to a server that offers
	// it, a little above what it then sends: 1,083,794 for a busta of 1,083,760 bytes,
	// measured on the lab), with some room for a client that declares a little less; a
	// message of unknown size is grown by doubling, each growth a copy of what came before.
	want := min(s.cfg.MaxSize, 1<<20) // grown below as the data arrives
	if tx.size > 0 && tx.size <= s.cfg.MaxSize {
		want = min(tx.size+tx.size/32+4096, s.cfg.MaxSize)
	}
	if !s.reserve(want) {
		return nil, 0, errBusy
	}
	reserved := want
	buf := make([]byte, 0, want)
	for {
		if len(buf) == cap(buf) {
			more := max(reserved, 64<<10) // double the reservation
			if !s.reserve(more) {
				return nil, reserved, errBusy
			}
			reserved += more
			buf = slices.Grow(buf, int(more))
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		switch {
		case err == io.EOF:
			return buf, reserved, nil
		case err == errTooLarge:
			return nil, reserved, err
		case err != nil:
			return nil, reserved, &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Message not received whole"}
		}
	}
}

// queueID is Postfix's queue id from the Received field its smtpd or pickup prepended
// ("... by mx.example (Postfix) with ESMTPS id 4XyZ12abc for <...>; date"), for logs that
// match the maillog; "" when the first field is not such a line.
func queueID(msg []byte) string {
	end := bytes.Index(msg, []byte("\r\n\r\n"))
	if end < 0 {
		end = len(msg)
	}
	head := msg[:min(end, 4096)]
	if !bytes.HasPrefix(bytes.ToLower(head), []byte("received:")) {
		return ""
	}
	line := head
	for i := 0; i+2 < len(head); i++ { // the first field, unfolded
		if head[i] == '\r' && head[i+1] == '\n' && head[i+2] != ' ' && head[i+2] != '\t' {
			line = head[:i]
			break
		}
	}
	f := bytes.Fields(line)
	for i := 0; i+1 < len(f); i++ {
		if bytes.Equal(f[i], []byte("id")) {
			return string(bytes.TrimRight(f[i+1], ";"))
		}
	}
	return ""
}

// reply is the LMTP reply of one recipient's outcome, logged and counted.
func (s *DeliveryServer) reply(log *slog.Logger, o pec.RcptOutcome) error {
	receipt := "none"
	switch o.Receipt {
	case pec.KindConsegnaCompleta, pec.KindConsegnaBreve, pec.KindConsegnaSintetica:
		receipt = o.Receipt.Info().Name[len("consegna-"):]
	case pec.KindMancataConsegna:
		receipt = "mancata-consegna"
	}
	s.m.deliveries.WithLabelValues(o.Outcome, receipt).Inc()
	attrs := []any{"rcpt", o.Rcpt, "outcome", o.Outcome, "receipt", receipt}
	if o.Found {
		attrs = append(attrs, "recovered", true)
		s.m.recovered.Inc()
	}
	if o.Detail != "" {
		attrs = append(attrs, "detail", o.Detail)
	}
	if o.Err != nil {
		r := pec.Reply(o.Err)
		log.Warn("delivery "+o.Outcome, append(attrs, "reply", r.String(), "error", o.Err)...)
		return o.Err // the server answers it through pec.Reply
	}
	log.Info("delivery "+o.Outcome, attrs...)
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: o.Text}
}

// metrics of the delivery point. Labels are bounded: outcome is one of pec's Delivered
// labels, receipt one of completa, breve, sintetica, mancata-consegna, none.
type metrics struct {
	deliveries *prometheus.CounterVec
	seconds    prometheus.Histogram
	recovered  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	buckets := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	m := &metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pec_deliveries_total",
			Help: "Recipients answered by the delivery point, by outcome and receipt emitted."}, []string{"outcome", "receipt"}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pec_delivery_seconds",
			Help: "One LMTP transaction at the delivery point, end of data to the replies.", Buckets: buckets}),
		recovered: prometheus.NewCounter(prometheus.CounterOpts{Name: "pec_delivery_recovered_total",
			Help: "Recipients whose message an interrupted earlier attempt had already stored (found through doveadm, not stored again)."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.deliveries, m.seconds, m.recovered} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("lmtpd: metrics: %w", err)
			}
		}
	}
	return m, nil
}
