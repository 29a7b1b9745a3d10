package hsm

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/miekg/pkcs11"
)

// token is one logged-in token and its pool of sessions, shared by every key on it. CKU_USER
// login belongs to the token and the application, not to a session (PKCS#11 v2.40 §5.6): one
// C_Login serves every session, and closing the last session logs out.
//
// Recovery: a call that fails with a lostToken error drops every session (the generation
// changes, sessions of older generations are closed when released) and marks the token down.
// The next caller reopens it (find the slot by label, C_OpenSession, C_Login, find the keys);
// if the token cannot be found, the module is re-initialised first. While down, callers fail
// fast with an UnavailableError until the next attempt, which backs off from retryMin to
// retryMax.
type token struct {
	mod      *module
	label    string
	pin      string
	wait     time.Duration
	retryMin time.Duration
	retryMax time.Duration
	log      *slog.Logger
	met      *metrics

	sem   chan struct{} // one permit per session that may be in use
	flags uint          // C_OpenSession flags: read-only for signing, read-write for Admin

	mu        sync.Mutex
	slot      uint
	gen       uint64 // bumped when the sessions are dropped
	modGen    uint64 // module generation the sessions and key handles belong to
	up        bool
	closed    bool // Keys.Close was called: never reopen
	reopening bool
	idle      []pkcs11.SessionHandle
	retryAt   time.Time
	backoff   time.Duration
	lastErr   error
	pinErr    error // the token refused the PIN at a re-login: never log in again
	keys      []*p11Key
}

// p11Key is a private key on a token. handle and keyType are set by reopen, under token.mu.
type p11Key struct {
	label   string
	id      []byte
	handle  pkcs11.ObjectHandle
	keyType uint
}

func (k *p11Key) String() string {
	if k.label != "" {
		return fmt.Sprintf("key %q", k.label)
	}
	return fmt.Sprintf("key id %x", k.id)
}

// lease is a session borrowed from the pool.
type lease struct {
	h      pkcs11.SessionHandle
	gen    uint64
	modGen uint64
	key    pkcs11.ObjectHandle
}

func newToken(mod *module, label, pin string, cfg *Config, log *slog.Logger, met *metrics) *token {
	return &token{
		mod: mod, label: label, pin: pin, wait: cfg.SessionWait,
		retryMin: cfg.RetryMin, retryMax: cfg.RetryMax, log: log, met: met,
		sem: make(chan struct{}, cfg.PoolSize), flags: pkcs11.CKF_SERIAL_SESSION,
	}
}

// open opens the token for the first time, at start-up: errors are configuration errors
// (wrong label, wrong PIN, missing key) and are returned as they are.
func (t *token) open() error {
	h, err := t.reopen(false)
	if err != nil {
		if pinRefused(err) {
			return fmt.Errorf("%w (every failed login counts towards locking the token: fix the PIN before starting again)", err)
		}
		return err
	}
	t.mu.Lock()
	t.idle = append(t.idle, h)
	t.mu.Unlock()
	return nil
}

// acquire borrows a session and the handle of key k.
func (t *token) acquire(k *p11Key) (lease, error) {
	if err := t.failFast(); err != nil {
		return lease{}, err
	}
	start := time.Now()
	select {
	case t.sem <- struct{}{}:
	default:
		timer := time.NewTimer(t.wait)
		select {
		case t.sem <- struct{}{}:
			timer.Stop()
		case <-timer.C:
			t.met.wait.Observe(time.Since(start).Seconds())
			return lease{}, &UnavailableError{Kind: "session_wait", Err: fmt.Errorf("no free session within %v", t.wait)}
		}
	}
	t.met.wait.Observe(time.Since(start).Seconds())
	l, err := t.take(k)
	if err != nil {
		<-t.sem
	}
	return l, err
}

// failFast returns an UnavailableError when the token is down and it is not yet time to try
// again, without waiting for a session.
func (t *token) failFast() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return &UnavailableError{Kind: "token_down", Err: errClosed}
	}
	if t.pinErr != nil {
		return &UnavailableError{Kind: "pin", Err: t.pinErr}
	}
	if t.up && t.modGen != t.mod.gen.Load() {
		t.dropLocked(t.gen, errors.New("module re-initialised"))
	}
	if !t.up && (t.reopening || time.Now().Before(t.retryAt)) {
		return &UnavailableError{Kind: "token_down", Err: t.lastErr}
	}
	return nil
}

// take gets a session for a caller holding a permit: an idle one, a new one, or the first one
// of a reopened token.
func (t *token) take(k *p11Key) (lease, error) {
	t.mu.Lock()
	if t.up && t.modGen != t.mod.gen.Load() {
		t.dropLocked(t.gen, errors.New("module re-initialised"))
	}
	if t.up {
		l := lease{gen: t.gen, modGen: t.modGen, key: k.handle}
		if n := len(t.idle); n > 0 {
			l.h = t.idle[n-1]
			t.idle = t.idle[:n-1]
			t.mu.Unlock()
			return l, nil
		}
		slot := t.slot
		t.mu.Unlock()
		t.mod.mu.RLock()
		var err error
		if t.mod.gen.Load() != l.modGen {
			err = pkcs11.Error(pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED)
		} else {
			l.h, err = t.mod.ctx.OpenSession(slot, t.flags)
		}
		t.mod.mu.RUnlock()
		if err != nil {
			if lostToken(err) {
				t.drop(l.gen, err)
				return lease{}, &UnavailableError{Kind: "lost", Err: fmt.Errorf("C_OpenSession: %w", err)}
			}
			// CKR_SESSION_COUNT and the like: the token is there but will not open more.
			return lease{}, &UnavailableError{Kind: "session_open", Err: fmt.Errorf("C_OpenSession: %w", err)}
		}
		return l, nil
	}
	return t.takeReopened(k)
}

// takeReopened reopens a token that is down, unless it is not yet time to try again or the
// token refused the PIN, and returns the session of the reopen. Call it with t.mu held: it
// unlocks it.
func (t *token) takeReopened(k *p11Key) (lease, error) {
	if t.pinErr != nil {
		t.mu.Unlock()
		return lease{}, &UnavailableError{Kind: "pin", Err: t.pinErr}
	}
	if t.closed || t.reopening || time.Now().Before(t.retryAt) {
		err := t.lastErr
		if t.closed {
			err = errClosed
		}
		t.mu.Unlock()
		return lease{}, &UnavailableError{Kind: "token_down", Err: err}
	}
	t.reopening = true
	t.mu.Unlock()

	h, err := t.reopen(true)

	t.mu.Lock()
	defer t.mu.Unlock()
	t.reopening = false
	if err != nil && pinRefused(err) {
		// Issue 12 item 10: a refused PIN stays refused, and every further C_Login would count
		// towards locking the token (PKCS#11 v2.40 §5.6: CKF_USER_PIN_COUNT_LOW, _FINAL_TRY,
		// _LOCKED). No more attempts: every signature fails with kind "pin" (4xx for the
		// client) until the PIN is fixed and the process restarted.
		t.pinErr = fmt.Errorf("token %q refused the PIN at a new login (%w): no further login attempts, which would lock the token; fix the PIN (signer.pkcs11.pin_env or pin_file) and restart", t.label, err)
		t.lastErr = t.pinErr
		t.log.Error("hsm: the token refused the PIN: signing stopped, no further login attempts", slog.String("token", t.label), slog.Any("error", err))
		return lease{}, &UnavailableError{Kind: "pin", Err: t.pinErr}
	}
	if err != nil {
		t.backoff = min(max(2*t.backoff, t.retryMin), t.retryMax)
		t.retryAt = time.Now().Add(t.backoff)
		t.lastErr = err
		t.log.Warn("hsm: token still unavailable", slog.String("token", t.label), slog.Any("error", err), slog.Duration("retry_in", t.backoff))
		return lease{}, &UnavailableError{Kind: "reopen", Err: err}
	}
	t.log.Info("hsm: token reopened", slog.String("token", t.label))
	t.backoff, t.lastErr = 0, nil
	return lease{h: h, gen: t.gen, modGen: t.modGen, key: k.handle}, nil
}

// release gives the session back, or closes it when it is bad or of a dropped generation.
func (t *token) release(l lease, bad bool) {
	t.mu.Lock()
	if !bad && t.up && l.gen == t.gen {
		t.idle = append(t.idle, l.h)
		t.mu.Unlock()
		<-t.sem
		return
	}
	t.mu.Unlock()
	t.closeSessions(l.modGen, l.h)
	<-t.sem
}

// closeSessions closes sessions opened under module generation modGen; after a reinit their
// handles are void and may even name another token's sessions, so they are left alone.
func (t *token) closeSessions(modGen uint64, hs ...pkcs11.SessionHandle) {
	t.mod.mu.RLock()
	defer t.mod.mu.RUnlock()
	if t.mod.gen.Load() != modGen {
		return
	}
	for _, h := range hs {
		_ = t.mod.ctx.CloseSession(h)
	}
}

// drop marks the token down after err, unless generation gen was already dropped.
func (t *token) drop(gen uint64, err error) {
	t.mu.Lock()
	idle, modGen := t.dropLocked(gen, err)
	t.mu.Unlock()
	t.closeSessions(modGen, idle...)
}

func (t *token) dropLocked(gen uint64, err error) ([]pkcs11.SessionHandle, uint64) {
	if gen != t.gen || !t.up {
		return nil, 0
	}
	t.log.Warn("hsm: token lost, dropping its sessions", slog.String("token", t.label), slog.Any("error", err))
	t.up = false
	t.gen++
	t.lastErr = err
	t.retryAt = time.Time{} // the first reopen is tried at once
	idle := t.idle
	t.idle = nil
	return idle, t.modGen
}

// reopen finds the token, opens a session, logs in and finds every key. On success the token
// is up with a new generation and the session is returned for the caller's use.
func (t *token) reopen(mayReinit bool) (pkcs11.SessionHandle, error) {
	m := t.mod
	seen := m.gen.Load()
	m.mu.RLock()
	slot, err := m.findSlot(t.label)
	m.mu.RUnlock()
	if err != nil && mayReinit {
		// SoftHSM2 does not see a token directory that came back until C_Initialize; a
		// network HSM's library may also need it after a failover.
		if rerr := m.reinit(seen); rerr != nil {
			return 0, rerr
		}
		seen = m.gen.Load()
		m.mu.RLock()
		slot, err = m.findSlot(t.label)
		m.mu.RUnlock()
	}
	if err != nil {
		return 0, err
	}

	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.gen.Load() != seen {
		return 0, errors.New("module re-initialised meanwhile")
	}
	h, err := m.ctx.OpenSession(slot, t.flags)
	if err != nil {
		return 0, fmt.Errorf("token %q: C_OpenSession: %w", t.label, err)
	}
	if err := m.login(h, t.label, t.pin); err != nil {
		_ = m.ctx.CloseSession(h)
		return 0, fmt.Errorf("token %q: login: %w", t.label, err)
	}
	type found struct {
		h pkcs11.ObjectHandle
		t uint
	}
	handles := make([]found, len(t.keys))
	for i, k := range t.keys {
		oh, kt, err := findPrivateKey(m.ctx, h, k.label, k.id)
		if err != nil {
			_ = m.ctx.CloseSession(h)
			return 0, fmt.Errorf("token %q: %v: %w", t.label, k, err)
		}
		handles[i] = found{oh, kt}
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		_ = m.ctx.CloseSession(h)
		return 0, errClosed
	}
	for i, k := range t.keys {
		k.handle, k.keyType = handles[i].h, handles[i].t
	}
	t.slot, t.modGen, t.up = slot, seen, true
	t.gen++
	t.mu.Unlock()
	return h, nil
}

var (
	errKeyNotFound = errors.New("private key not found")
	errClosed      = errors.New("keyring closed")
)

// findPrivateKey finds exactly one private key by label and/or id.
func findPrivateKey(ctx *pkcs11.Ctx, sh pkcs11.SessionHandle, label string, id []byte) (pkcs11.ObjectHandle, uint, error) {
	tmpl := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY)}
	if label != "" {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_LABEL, label))
	}
	if id != nil {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_ID, id))
	}
	objs, err := findObjects(ctx, sh, tmpl, 2)
	if err != nil {
		return 0, 0, err
	}
	switch len(objs) {
	case 0:
		return 0, 0, errKeyNotFound
	case 2:
		return 0, 0, errors.New("more than one private key matches: give key and key_id")
	}
	attrs, err := ctx.GetAttributeValue(sh, objs[0], []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, nil)})
	if err != nil {
		return 0, 0, fmt.Errorf("CKA_KEY_TYPE: %w", err)
	}
	return objs[0], uint(bytesToUint(attrs[0].Value)), nil
}

func findObjects(ctx *pkcs11.Ctx, sh pkcs11.SessionHandle, tmpl []*pkcs11.Attribute, max int) ([]pkcs11.ObjectHandle, error) {
	if err := ctx.FindObjectsInit(sh, tmpl); err != nil {
		return nil, fmt.Errorf("C_FindObjectsInit: %w", err)
	}
	objs, _, err := ctx.FindObjects(sh, max)
	if ferr := ctx.FindObjectsFinal(sh); err == nil && ferr != nil {
		err = ferr
	}
	if err != nil {
		return nil, fmt.Errorf("C_FindObjects: %w", err)
	}
	return objs, nil
}

// bytesToUint decodes a CK_ULONG attribute (native byte order, little-endian on every
// platform this runs on).
func bytesToUint(b []byte) uint64 {
	var v uint64
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

// close closes every idle session. Sessions in use are closed when released.
func (t *token) close() {
	t.mu.Lock()
	idle, modGen := t.idle, t.modGen
	t.idle, t.up, t.closed = nil, false, true
	t.gen++
	t.mu.Unlock()
	t.closeSessions(modGen, idle...)
}
