// Package milter is the Postfix adapter of the PEC access and reception points: it turns the
// milter callbacks of one SMTP transaction into one engine call at end-of-message, and the
// engine's result into milter modifications and replies (errors through pec.Reply, the one
// error-to-reply table). It contains no PEC rules.
//
// The point a connection plays comes from the {daemon_name} macro, set per Postfix listener
// with milter_macro_daemon_name (DESIGN.md), and is chosen once per connection: "pec-access"
// is the access point (access.go, pec.Engine.Submit), "pec-reception" the reception point
// (reception.go, pec.Engine.Receive), anything else is a misconfiguration and every transaction is temp-failed.
// The session (session.go) is the same for every point: envelope, exact bytes, memory budget.
//
// It uses the low-level go-milter server rather than mailfilter: the busta replaces the
// message exactly (every original header field deleted, the busta's added in order, the body
// replaced), which needs direct control of the header indexes.
package milter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"github.com/d--j/go-milter"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gestore-pec/gestore/pec"
)

// Roles, as set by milter_macro_daemon_name in master.cf.
const (
	RoleAccess    = "pec-access"
	RoleReception = "pec-reception"
)

// Engine is what the adapter needs from the PEC engine.
type Engine interface {
	Submit(ctx context.Context, s *pec.Submission) (*pec.Submitted, error)
	Receive(ctx context.Context, in *pec.Incoming) (*pec.Received, error)
	// Issued notes a confirmation recipient handed to Postfix (pec/confirm.go).
	Issued(confirm string)
	// StreamScan starts the antivirus scan of a submission while its message arrives (nil
	// when Submit would not scan it).
	StreamScan(login string, rcpts []string) *pec.ScanStream
}

// Config tunes the adapter.
type Config struct {
	// MaxSize is limits.hard_max_size: a message above it is refused with 552 5.3.4 and no
	// avviso (RFC 6109 §3.1.2). Required.
	MaxSize int64
	// Timeout bounds one end-of-message (scan, sign, commit). Default 120s. Keep it below
	// Postfix's milter_content_timeout; the adapter sends progress packets meanwhile.
	Timeout time.Duration
	// ProgressInterval is how often a progress packet keeps Postfix waiting during a long
	// end-of-message. Default 5s.
	ProgressInterval time.Duration
	// MaxBuffered bounds the message bytes held in memory by all transactions together
	// (each message is buffered whole: it is signed whole). A transaction that would pass it
	// is temp-failed (451 4.3.0) and the client retries later. Default the larger of
	// 4 × MaxSize and 256 MiB.
	MaxBuffered int64
	// StreamScanFrom is the size from which a submission's antivirus scan starts while
	// Postfix is still sending the message (issue 19, P2'), instead of at end-of-message.
	// Default 256 KiB; negative: never.
	StreamScanFrom int64
}

// Deps are the adapter's collaborators.
type Deps struct {
	Engine     Engine
	Logger     *slog.Logger          // default: discard
	Registerer prometheus.Registerer // default: not registered
}

// Server serves the milter protocol.
type Server struct {
	cfg Config
	eng Engine
	log *slog.Logger
	m   *metrics
	srv *milter.Server

	handlers map[string]handler // by {daemon_name}

	mu       sync.Mutex
	closing  bool           // set when the shutdown grace is over: new transactions are temp-failed
	buffered int64          // message bytes held by all sessions (under mu)
	lastFree time.Time      // last FreeOSMemory (under mu)
	inflight sync.WaitGroup // end-of-message calls under way
}

// New validates cfg and builds a Server. Call Serve with a listener (see Listen).
func New(cfg Config, deps Deps) (*Server, error) {
	if deps.Engine == nil {
		return nil, errors.New("milter: no engine")
	}
	if cfg.MaxSize <= 0 {
		return nil, errors.New("limits.hard_max_size: must be positive")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 120 * time.Second
	}
	if cfg.ProgressInterval == 0 {
		cfg.ProgressInterval = 5 * time.Second
	}
	if cfg.Timeout < 0 || cfg.ProgressInterval < 0 {
		return nil, errors.New("milter.timeout: must be positive")
	}
	if cfg.MaxBuffered == 0 {
		cfg.MaxBuffered = max(4*cfg.MaxSize, 256<<20)
	}
	if cfg.StreamScanFrom == 0 {
		cfg.StreamScanFrom = defaultStreamScanFrom
	}
	if cfg.MaxBuffered < cfg.MaxSize {
		return nil, errors.New("milter.max_buffered: must be at least limits.hard_max_size")
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, eng: deps.Engine, log: deps.Logger.With("component", "milter"), m: newMetrics()}
	s.handlers = map[string]handler{RoleAccess: access{s}, RoleReception: reception{s}}
	if deps.Registerer != nil {
		if err := s.m.register(deps.Registerer); err != nil {
			return nil, fmt.Errorf("milter: metrics: %w", err)
		}
	}
	s.srv = milter.NewServer(
		milter.WithDynamicMilter(func(version uint32, _ milter.OptAction, _ milter.OptProtocol, _ milter.DataSize) milter.Milter {
			return &session{s: s}
		}),
		milter.WithActions(milter.OptAddHeader|milter.OptChangeHeader|milter.OptChangeBody|milter.OptAddRcpt|milter.OptAddRcptWithArgs|milter.OptRemoveRcpt),
		// Postfix keeps a milter connection for a whole SMTP session, idle between
		// commands for up to smtpd_timeout (300s); a connection silent for much longer
		// than that is dead and its goroutine is reclaimed.
		milter.WithReadTimeout(15*time.Minute),
		// Header values exactly as received (no swallowed space); no unknown-command, HELO or
		// DATA events; and no reply to any event but MAIL FROM (where an unknown role is
		// refused) and end-of-message: nothing else is decided before end-of-message, and
		// every reply is a round trip Postfix waits for (issue 19: one per 64 KiB body chunk,
		// 160 for a 10 MB message). Without replies to body chunks a message over the size
		// limit or the memory budget is refused at end-of-message (session.go).
		milter.WithProtocols(milter.OptHeaderLeadingSpace|milter.OptNoUnknown|milter.OptNoHelo|milter.OptNoData|
			milter.OptNoConnReply|milter.OptNoRcptReply|milter.OptNoHeaderReply|milter.OptNoEOHReply|milter.OptNoBodyReply),
		milter.WithMacroRequest(milter.StageConnect, []milter.MacroName{milter.MacroDaemonName}),
		milter.WithMacroRequest(milter.StageMail, []milter.MacroName{milter.MacroAuthAuthen}),
		milter.WithMacroRequest(milter.StageEOM, []milter.MacroName{milter.MacroQueueId}),
	)
	return s, nil
}

// Serve accepts milter connections on ln until Shutdown. It returns nil after a shutdown.
func (s *Server) Serve(ln net.Listener) error {
	err := s.srv.Serve(ln)
	if errors.Is(err, milter.ErrServerClosed) {
		return nil
	}
	return err
}

// replyFlush bounds the wait, at shutdown, for the replies of the last end-of-message calls.
const replyFlush = time.Second

// Shutdown stops accepting connections and lets the open SMTP sessions end until ctx is
// done. Then it temp-fails every transaction that has not reached end-of-message yet, waits
// for those already at end-of-message (they finish: their outcome is recorded and answered,
// bounded by Config.Timeout) and closes the remaining connections.
func (s *Server) Shutdown(ctx context.Context) error {
	stopCtx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() { done <- s.srv.Shutdown(stopCtx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.inflight.Wait()
	// The last end-of-message calls have returned, but go-milter writes their replies after
	// that: give the writes a moment before the connections are closed (the sessions may end
	// by themselves meanwhile).
	select {
	case err := <-done:
		return err
	case <-time.After(replyFlush):
	}
	stop()
	<-done
	return nil
}

// reserve accounts n more buffered bytes; false when that would pass MaxBuffered.
func (s *Server) reserve(n int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.buffered+n > s.cfg.MaxBuffered {
		return false
	}
	s.buffered += n
	return true
}

// engineWork is how many times a message's size the engine holds besides the milter's buffer
// while it decides: the 7-bit re-encoding of an original with 8-bit parts (the busta itself
// shares the original's bytes, pec.Message.Parts; issue 19, P6).
const engineWork = 1

// afterLarge gives the memory of a large transaction back to the system, at most every few
// seconds, once the transaction has let go of it (session.EndOfMessage): Go's scavenger returns freed memory lazily, and a provider's milter that held five
// 95 MB messages at once would otherwise keep 1 GB resident long after.
func (s *Server) afterLarge(n int) {
	if n < 16<<20 {
		return
	}
	s.mu.Lock()
	due := time.Since(s.lastFree) > 5*time.Second
	if due {
		s.lastFree = time.Now()
	}
	s.mu.Unlock()
	if due {
		go debug.FreeOSMemory()
	}
}

func (s *Server) release(n int64) {
	s.mu.Lock()
	s.buffered -= n
	s.mu.Unlock()
}

// begin registers an end-of-message call; false when shutting down.
func (s *Server) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.inflight.Add(1)
	return true
}
