package milter

import (
	"errors"

	"github.com/d--j/go-milter"

	"github.com/gestore-pec/gestore/pec"
)

// outcome labels (bounded: metrics). The engine's labels, plus the adapter's own.
const (
	outcomeAccepted     = pec.OutcomeAccepted
	outcomeRefused      = pec.OutcomeRefused
	outcomeVirus        = pec.OutcomeVirus
	outcomeTooLarge     = pec.OutcomeTooLarge
	outcomeRejected     = pec.OutcomeRejected
	outcomeTempfail     = pec.OutcomeTempfail
	outcomeMisconfigure = "misconfigured"
)

// errBusy: the memory budget for buffered messages is exhausted (temporary: the client
// retries when other large messages are through).
var errBusy = &pec.Temporary{Op: "buffer", Err: errors.New("milter.max_buffered reached")}

// errShuttingDown: a transaction reached end-of-message after the shutdown grace.
var errShuttingDown = &pec.Temporary{Op: "shutdown", Err: errors.New("shutting down")}

// pecTooLarge: above limits.hard_max_size (552, no avviso).
var pecTooLarge = pec.ErrTooLarge

// errMisconfigured: the listener that called us has an unknown {daemon_name}.
var errMisconfigured = errors.New("milter: unknown {daemon_name}; set milter_macro_daemon_name to pec-access or pec-reception")

// toResponse turns an engine error into the milter's answer through pec.Reply, the one
// error-to-reply table: an error with an SMTP status gets that reply; anything else
// (temporary or unknown) becomes 451 4.3.0.
func toResponse(err error) (*milter.Response, string) {
	r := pec.Reply(err)
	resp, rerr := milter.RejectWithCodeAndReason(uint16(r.Code), r.Enhanced+" "+r.Text)
	if rerr != nil {
		return milter.RespTempFail, outcomeTempfail
	}
	return resp, r.Outcome
}
