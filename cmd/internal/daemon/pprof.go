package daemon

import (
	"net/http"
	"net/http/pprof"
	"runtime"
)

// servePprof adds Go's profiler to the metrics mux (metrics.pprof, off by default) and turns
// on the sampling of blocking events and lock contention, so that a profile taken under load
// shows where the wall time goes besides the CPU: waits on clamd, the store, the HSM, locks
// (issue 19). The rates sample one blocking event per 10 µs blocked and one contended lock
// in 10: cheap enough to leave on while a benchmark runs.
//
// It is on the loopback metrics listener rather than behind a build tag so that the binary
// that is measured is the binary that is shipped.
func servePprof(mux *http.ServeMux) {
	runtime.SetBlockProfileRate(10_000)
	runtime.SetMutexProfileFraction(10)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}
