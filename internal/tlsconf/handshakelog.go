package tlsconf

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
)

// LogRefused wraps a server's credentials so that a refused handshake (a
// client certificate from another CA, an expired one, none where one is
// required, a client that does not trust the node) is logged at WARN: with
// TLS 1.3 the client often sees only "broken pipe", the node knows why.
// At most one line per interval, counting the ones left out, so that a
// scanner cannot flood the log; a connection closed before its first
// byte (a load balancer's TCP check) is not a refusal.
func LogRefused(c credentials.TransportCredentials, log *slog.Logger, interval time.Duration) credentials.TransportCredentials {
	return &refusedLog{TransportCredentials: c, log: log, interval: interval}
}

type refusedLog struct {
	credentials.TransportCredentials
	log      *slog.Logger
	interval time.Duration

	mu      sync.Mutex // guards last and skipped
	last    time.Time
	skipped int
}

func (r *refusedLog) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	c, info, err := r.TransportCredentials.ServerHandshake(conn)
	if err != nil && !errors.Is(err, io.EOF) {
		r.note(conn.RemoteAddr(), err)
	}
	return c, info, err
}

func (r *refusedLog) note(remote net.Addr, err error) {
	r.mu.Lock()
	now := time.Now()
	if now.Sub(r.last) < r.interval {
		r.skipped++
		r.mu.Unlock()
		return
	}
	skipped := r.skipped
	r.last, r.skipped = now, 0
	r.mu.Unlock()
	r.log.Warn("TLS handshake refused", "remote", remote.String(), "err", err, "refused_since_last_line", skipped)
}

// Clone keeps the logging; grpc clones credentials per use in places.
func (r *refusedLog) Clone() credentials.TransportCredentials {
	return &refusedLog{TransportCredentials: r.TransportCredentials.Clone(), log: r.log, interval: r.interval}
}
