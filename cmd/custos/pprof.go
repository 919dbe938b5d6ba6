package main

import (
	"net/http"
	"net/http/pprof"
	"time"
)

// newPprofServer serves Go's profiles (goroutine dumps, heap, CPU
// profiles, execution traces) for listeners.pprof: a listener of its own,
// off by default, so that the admin listener, which approvers and
// monitoring reach, never hands them out.
func newPprofServer() *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
}
