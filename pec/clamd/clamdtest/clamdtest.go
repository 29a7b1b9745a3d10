// Package clamdtest is a fake clamd for tests: it speaks INSTREAM on 127.0.0.1:0, alone or
// in an IDSESSION session (each reply then prefixed with the command's number), reports
// the EICAR test string (and any other configured pattern) as a virus, and can be switched to
// misbehave (refuse, hang, answer ERROR, enforce a stream size limit) so callers can test
// their temporary-failure paths without a real ClamAV.
package clamdtest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// EICAR is the standard antivirus test string (68 bytes).
const EICAR = `X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`

// EICARName is the signature name the fake reports for EICAR, like clamd with the lab's
// custom database.
const EICARName = "PEC.Test.EICAR.UNOFFICIAL"

// Mode selects how the fake answers.
type Mode int

const (
	Normal    Mode = iota // scan and answer OK / FOUND
	Hang                  // read everything, never answer (until the client gives up)
	Error                 // answer "Unexpected error. ERROR"
	CloseConn             // close the connection without answering
)

// Server is a running fake clamd.
type Server struct {
	ln       net.Listener
	mu       sync.Mutex
	mode     Mode
	maxLen   int64
	patterns map[string]string // byte pattern -> signature name
	scans    int
	conns    int
	received int64             // the most bytes one stream carried, whether it ended or was cut
	idle     map[net.Conn]bool // open connections, true while a session waits for a command
	wg       sync.WaitGroup
	done     chan struct{}
}

// New starts a fake clamd on 127.0.0.1:0 and stops it when the test ends.
func New(tb testing.TB) *Server {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := &Server{ln: ln, patterns: map[string]string{EICAR: EICARName}, idle: map[net.Conn]bool{}, done: make(chan struct{})}
	s.wg.Add(1)
	go s.serve()
	tb.Cleanup(s.Close)
	return s
}

// Addr is host:port for clamd.Config.Addr.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// SetMode switches the behaviour for the following scans.
func (s *Server) SetMode(m Mode) { s.mu.Lock(); s.mode = m; s.mu.Unlock() }

// SetStreamMaxLength makes the fake answer "INSTREAM size limit exceeded. ERROR" when a stream
// passes n bytes, like clamd's StreamMaxLength. 0 means no limit.
func (s *Server) SetStreamMaxLength(n int64) { s.mu.Lock(); s.maxLen = n; s.mu.Unlock() }

// AddSignature makes the fake report name for any stream that contains pattern.
func (s *Server) AddSignature(pattern, name string) {
	s.mu.Lock()
	s.patterns[pattern] = name
	s.mu.Unlock()
}

// Scans is the number of INSTREAM commands received.
func (s *Server) Scans() int { s.mu.Lock(); defer s.mu.Unlock(); return s.scans }

// MaxReceived is the most data bytes one INSTREAM command carried, counted as they arrive
// (a stream cut before its end counts what came).
func (s *Server) MaxReceived() int64 { s.mu.Lock(); defer s.mu.Unlock(); return s.received }

// Conns is the number of connections accepted.
func (s *Server) Conns() int { s.mu.Lock(); defer s.mu.Unlock(); return s.conns }

// DropIdle closes every session waiting for its next command, as clamd does when its
// IdleTimeout passes or when it restarts. It returns how many it closed.
func (s *Server) DropIdle() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for c, idle := range s.idle {
		if idle {
			_ = c.Close()
			n++
		}
	}
	return n
}

// Close stops the server and waits for its connections.
func (s *Server) Close() {
	select {
	case <-s.done:
		return
	default:
	}
	close(s.done)
	_ = s.ln.Close()
	s.mu.Lock()
	for c := range s.idle {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *Server) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns++
		s.idle[c] = false
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.idle, c)
				s.mu.Unlock()
				c.Close()
			}()
			s.handle(c)
		}()
	}
}

func (s *Server) handle(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	br := bufio.NewReader(c)
	cmd, err := br.ReadString(0)
	if err != nil {
		return
	}
	if cmd != "zIDSESSION\x00" {
		if cmd != "zINSTREAM\x00" {
			_, _ = io.WriteString(c, "UNKNOWN COMMAND\x00")
			return
		}
		s.instream(c, br, "")
		return
	}
	for n := 1; ; n++ {
		s.setIdle(c, true)
		cmd, err := br.ReadString(0)
		s.setIdle(c, false)
		switch {
		case err != nil || cmd == "zEND\x00":
			return
		case cmd != "zINSTREAM\x00":
			_, _ = fmt.Fprintf(c, "%d: UNKNOWN COMMAND\x00", n)
			return
		}
		if !s.instream(c, br, fmt.Sprintf("%d: ", n)) {
			return
		}
	}
}

func (s *Server) setIdle(c net.Conn, idle bool) {
	s.mu.Lock()
	if _, open := s.idle[c]; open {
		s.idle[c] = idle
	}
	s.mu.Unlock()
}

// instream serves one INSTREAM command, its reply prefixed with id; false when the
// connection is to be closed.
func (s *Server) instream(c net.Conn, br *bufio.Reader, id string) bool {
	s.mu.Lock()
	s.scans++
	mode, maxLen := s.mode, s.maxLen
	pats := make(map[string]string, len(s.patterns))
	for k, v := range s.patterns {
		pats[k] = v
	}
	s.mu.Unlock()

	var data bytes.Buffer
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return false
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n == 0 {
			break
		}
		if maxLen > 0 && int64(data.Len())+int64(n) > maxLen {
			_, _ = io.WriteString(c, id+"INSTREAM size limit exceeded. ERROR\x00")
			return false
		}
		_, err := io.CopyN(&data, br, int64(n))
		s.mu.Lock()
		s.received = max(s.received, int64(data.Len()))
		s.mu.Unlock()
		if err != nil {
			return false
		}
	}
	switch mode {
	case Hang:
		<-s.done
		return false
	case Error:
		_, _ = io.WriteString(c, id+"Unexpected error. ERROR\x00")
		return false
	case CloseConn:
		return false
	}
	for p, name := range pats {
		if bytes.Contains(data.Bytes(), []byte(p)) {
			_, err := io.WriteString(c, id+"stream: "+name+" FOUND\x00")
			return err == nil
		}
	}
	_, err := io.WriteString(c, id+"stream: OK\x00")
	return err == nil
}
