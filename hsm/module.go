package hsm

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/miekg/pkcs11"
)

// module is one PKCS#11 library loaded in this process. C_Initialize and C_Finalize act on
// the whole process, so every user of a library path shares one module: two signers (or a
// signer and the benchmark's raw loop) never initialise the same library twice, which fails
// with CKR_CRYPTOKI_ALREADY_INITIALIZED (lab-recipe §5, "double-initialise trap").
//
// Every PKCS#11 call holds mu for reading; reinit holds it for writing, because C_Finalize
// while another thread is inside the library is undefined behaviour (PKCS#11 v2.40 §5.4).
type module struct {
	path string
	ctx  *pkcs11.Ctx
	mu   sync.RWMutex
	gen  atomic.Uint64 // bumped by every reinit: session and object handles of older generations are void
	refs int           // under modules.Lock
	dead bool          // finalised and unloaded by close; under mu

	pinsMu sync.Mutex
	pins   map[string][32]byte // token label -> SHA-256 of the PIN that logged in
	logins atomic.Int64        // C_Login calls, for tests
	// owned is false when C_Initialize said CKR_CRYPTOKI_ALREADY_INITIALIZED: some other code
	// in the process initialised the library, so we must not finalise it on close.
	owned bool
}

var modules = struct {
	sync.Mutex
	m map[string]*module
}{m: map[string]*module{}}

// openModule loads and initialises the library at path, or shares the one already loaded.
func openModule(path string) (*module, error) {
	modules.Lock()
	defer modules.Unlock()
	if m, ok := modules.m[path]; ok {
		m.refs++
		return m, nil
	}
	ctx := pkcs11.New(path)
	if ctx == nil {
		return nil, fmt.Errorf("module %s: cannot load the PKCS#11 library", path)
	}
	m := &module{path: path, ctx: ctx, refs: 1, owned: true}
	if err := ctx.Initialize(); err != nil {
		if !isCode(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
			ctx.Destroy()
			return nil, fmt.Errorf("module %s: C_Initialize: %w", path, err)
		}
		m.owned = false
	}
	modules.m[path] = m
	return m, nil
}

// close drops one reference; the last one finalises and unloads the library.
func (m *module) close() {
	modules.Lock()
	defer modules.Unlock()
	m.refs--
	if m.refs > 0 {
		return
	}
	delete(modules.m, m.path)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gen.Add(1) // sessions still lent out are void: release must not call the library
	m.dead = true
	if m.owned {
		_ = m.ctx.Finalize()
	}
	m.ctx.Destroy()
}

// reinit finalises and initialises the library again, unless another goroutine already did
// since generation seen. Some modules only notice a returning token or HSM at C_Initialize:
// SoftHSM2 2.6 scans its token directory there and nowhere else (see recovery_test.go).
// Every session and object handle of every token of this module becomes void.
func (m *module) reinit(seen uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dead {
		return errClosed
	}
	if m.gen.Load() != seen {
		return nil
	}
	m.gen.Add(1)
	// A C_Finalize error (CKR_CRYPTOKI_NOT_INITIALIZED when someone else finalised) does not
	// matter: C_Initialize tells whether the library is usable.
	_ = m.ctx.Finalize()
	err := m.ctx.Initialize()
	if err != nil && !isCode(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		return fmt.Errorf("C_Initialize: %w", err)
	}
	return nil
}

// findSlot finds the slot holding the token labelled label. Call with m.mu held for reading.
func (m *module) findSlot(label string) (uint, error) {
	if m.dead {
		return 0, errClosed
	}
	slots, err := m.ctx.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("C_GetSlotList: %w", err)
	}
	found := -1
	for _, s := range slots {
		ti, err := m.ctx.GetTokenInfo(s)
		if err != nil {
			continue // a token going away answers CKR_GENERAL_ERROR (SoftHSM2)
		}
		if ti.Label == label {
			if found >= 0 {
				return 0, fmt.Errorf("token %q: more than one token has this label", label)
			}
			found = int(s)
		}
	}
	if found < 0 {
		return 0, fmt.Errorf("token %q: %w", label, errTokenNotFound)
	}
	return uint(found), nil
}

var errTokenNotFound = errors.New("no token with this label")

var errPINDiffers = errors.New("the PIN differs from the one this process logged in with (as CKR_PIN_INCORRECT)")

// pinRefused reports whether a login failed because of the PIN itself: trying again with the
// same PIN can only fail again, and counts towards locking the token.
func pinRefused(err error) bool {
	if errors.Is(err, errPINDiffers) {
		return true
	}
	for _, c := range []uint{pkcs11.CKR_PIN_INCORRECT, pkcs11.CKR_PIN_LOCKED, pkcs11.CKR_PIN_EXPIRED,
		pkcs11.CKR_PIN_INVALID, pkcs11.CKR_PIN_LEN_RANGE} {
		if isCode(err, c) {
			return true
		}
	}
	return false
}

func isCode(err error, code uint) bool {
	var e pkcs11.Error
	return errors.As(err, &e) && uint(e) == code
}

// lostToken reports whether err means the sessions (or the key handle) are no longer good
// and the token must be reopened: the HSM restarted, failed over, or the token went away.
func lostToken(err error) bool {
	var e pkcs11.Error
	if !errors.As(err, &e) {
		return false
	}
	switch uint(e) {
	case pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED,
		pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_DEVICE_ERROR, pkcs11.CKR_DEVICE_MEMORY,
		pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_TOKEN_NOT_RECOGNIZED,
		pkcs11.CKR_USER_NOT_LOGGED_IN, pkcs11.CKR_GENERAL_ERROR, pkcs11.CKR_FUNCTION_FAILED,
		pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED, pkcs11.CKR_OPERATION_ACTIVE,
		// SoftHSM2 answers C_SignInit with this when its token directory disappeared.
		pkcs11.CKR_OBJECT_HANDLE_INVALID, pkcs11.CKR_KEY_HANDLE_INVALID:
		return true
	}
	return false
}

// moduleReset reports whether err suggests the library itself was reset under us (C_Finalize
// and C_Initialize by other code of the process, or a client library restarting): our session
// handles may then name sessions opened since, even another token's. We never share a session
// between goroutines, so CKR_OPERATION_ACTIVE can only mean that. The answer is to
// re-initialise the module ourselves, which voids every handle of every token at once, under
// the module's write lock.
func moduleReset(err error) bool {
	return isCode(err, pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED) || isCode(err, pkcs11.CKR_SESSION_HANDLE_INVALID) ||
		isCode(err, pkcs11.CKR_OPERATION_ACTIVE)
}

// login logs in to the token of session h. CKU_USER login belongs to the token and the
// application, so a second keyring of the process gets CKR_USER_ALREADY_LOGGED_IN whatever
// PIN it gives; the PIN that did log in is remembered (hashed) so that a wrong one is still
// refused. Call with mu held for reading.
func (m *module) login(h pkcs11.SessionHandle, label, pin string) error {
	sum := sha256.Sum256([]byte(pin))
	m.logins.Add(1)
	err := m.ctx.Login(h, pkcs11.CKU_USER, pin)
	m.pinsMu.Lock()
	defer m.pinsMu.Unlock()
	switch {
	case err == nil:
		if m.pins == nil {
			m.pins = map[string][32]byte{}
		}
		m.pins[label] = sum
		return nil
	case isCode(err, pkcs11.CKR_USER_ALREADY_LOGGED_IN):
		if known, ok := m.pins[label]; ok && known != sum {
			return errPINDiffers
		}
		return nil
	}
	return err
}
