package main

// --debug-addr: Go profiling on a listener of its own.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// debugServer serves net/http/pprof on a listener and mux of its own, so
// profiling is never reachable on the metrics port. (Importing
// net/http/pprof also registers its handlers on http.DefaultServeMux; no
// server here serves that mux.)
type debugServer struct {
	srv  *http.Server
	done chan struct{} // closed when Serve has returned
}

// startDebugServer listens on addr and serves /debug/pprof/ until stop.
func startDebugServer(addr string, log *slog.Logger) (*debugServer, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--debug-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index) // also serves the named profiles: heap, goroutine, ...
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	d := &debugServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, done: make(chan struct{})}
	go func() {
		defer close(d.done)
		if err := d.srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
			log.Error("debug server stopped", "err", err)
		}
	}()
	log.Warn("--debug-addr serves profiling (/debug/pprof/): whoever reaches it can read the process's command line and memory profile and slow it down; keep it on a private address",
		"addr", lis.Addr().String())
	return d, nil
}

// stop ends the server and waits for it. A CPU profile or trace being taken
// (30s by default) is cut after a second.
func (d *debugServer) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if d.srv.Shutdown(ctx) != nil {
		_ = d.srv.Close()
	}
	<-d.done
}
