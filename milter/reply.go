package milter

import (
	"errors"
	"fmt"

	"github.com/d--j/go-milter"

	"github.com/gestore-pec/gestore/pec"
)

// statusError is implemented by errors that carry their SMTP reply (pec.Refused,
// pec.StatusError, errTooLarge).
type statusError interface {
	error
	SMTPStatus() (code int, enhanced, text string)
}

// tempReply is the one reply for every internal failure and every error without an SMTP
// status (STYLE rule 4): Postfix keeps the message and the client retries. It says nothing
// about configuration, keys or paths.
const (
	tempCode     = 451
	tempEnhanced = "4.3.0"
	tempText     = "Temporary failure processing the PEC message, please retry later"
)

// outcome labels (bounded: metrics).
const (
	outcomeAccepted     = "accepted"
	outcomeRefused      = "refused"
	outcomeVirus        = "virus"
	outcomeTooLarge     = "too_large"
	outcomeRejected     = "rejected" // other 5xx without a notice (authentication)
	outcomeTempfail     = "tempfail"
	outcomePassthrough  = "passthrough" // reception point, not implemented yet
	outcomeMisconfigure = "misconfigured"
)

// errTooLarge: the message passed limits.hard_max_size. RFC 6109 §3.1.2: above the hard
// limit no avviso is produced, the message is refused at SMTP level with 552.
type errTooLarge struct{ limit int64 }

func (e errTooLarge) Error() string {
	return fmt.Sprintf("message larger than the hard limit of %d bytes", e.limit)
}

func (e errTooLarge) SMTPStatus() (int, string, string) {
	return 552, "5.3.4", "Message size exceeds fixed maximum message size"
}

// errBusy: the memory budget for buffered messages is exhausted (temporary, no status:
// answered 451 4.3.0 like any internal failure).
var errBusy = errors.New("milter: max_buffered reached")

// errMisconfigured: the listener that called us has an unknown {daemon_name}.
var errMisconfigured = errors.New("milter: unknown {daemon_name}; set milter_macro_daemon_name to pec-access or pec-reception")

// toResponse is the single point where an error becomes the milter's answer to Postfix. An
// error with an SMTP status gets that reply; anything else (temporary or unknown) becomes
// 451 4.3.0.
func toResponse(err error) (*milter.Response, string) {
	var se statusError
	if errors.As(err, &se) {
		code, enh, text := se.SMTPStatus()
		if code >= 400 && code < 600 {
			if resp, rerr := milter.RejectWithCodeAndReason(uint16(code), enh+" "+text); rerr == nil {
				return resp, classify(err, code)
			}
		}
	}
	resp, rerr := milter.RejectWithCodeAndReason(tempCode, tempEnhanced+" "+tempText)
	if rerr != nil {
		return milter.RespTempFail, outcomeTempfail
	}
	return resp, outcomeTempfail
}

func classify(err error, code int) string {
	var tl errTooLarge
	var ref *pec.Refused
	switch {
	case code < 500:
		return outcomeTempfail
	case errors.As(err, &tl):
		return outcomeTooLarge
	case errors.As(err, &ref) && ref.Kind == pec.KindNonAccettazioneVirus:
		return outcomeVirus
	case errors.As(err, &ref):
		return outcomeRefused
	default:
		return outcomeRejected
	}
}
