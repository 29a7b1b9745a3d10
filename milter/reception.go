package milter

import (
	"log/slog"

	"github.com/d--j/go-milter"
)

// reception is the handler of the MX listener ({daemon_name} pec-reception): the reception
// point. Until the engine's Receive exists, the message is accepted unchanged with a log line.
type reception struct{ s *Server }

func (reception) point() string { return RoleReception }
func (reception) buffers() bool { return false }
func (r reception) endOfMessage(x *session, m milter.Modifier, log *slog.Logger) (*milter.Response, error) {
	log.Warn("reception point not implemented yet: message accepted unchanged")
	r.s.m.transactions.WithLabelValues(RoleReception, outcomePassthrough).Inc()
	return milter.RespAccept, nil
}
