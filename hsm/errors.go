package hsm

import "fmt"

// UnavailableError is a temporary failure to sign: the token is down or being reopened, or no
// session became free in time. errors.Is(err, ErrUnavailable) holds. Its text names no path,
// label or PIN, but callers answering a peer should still use a fixed text.
type UnavailableError struct {
	// Kind is one of the bounded values also used as the metrics label: "session_wait"
	// (no free session in time), "token_down" (failing fast until the next reopen attempt),
	// "reopen" (a reopen attempt failed), "lost" (the token went away during this call),
	// "session_open" (the token refused one more session).
	Kind string
	Err  error // the cause, if any
}

func (e *UnavailableError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("%v (%s)", ErrUnavailable, e.Kind)
	}
	return fmt.Sprintf("%v (%s): %v", ErrUnavailable, e.Kind, e.Err)
}

// Unwrap gives ErrUnavailable and the cause.
func (e *UnavailableError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrUnavailable}
	}
	return []error{ErrUnavailable, e.Err}
}

// Temporary reports true: try again later.
func (e *UnavailableError) Temporary() bool { return true }
