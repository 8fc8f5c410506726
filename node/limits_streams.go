package node

// Per-caller stream limits: open Publish and Subscribe streams per
// identity, and Subscribe opens per second per identity. The caller is the
// identity auth put in the context (internal/auth), or the peer's host
// when auth is off; a client behind a NAT or proxy then shares its limit.

import (
	"context"
	"fmt"
	"math"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/streamgate/streamgate/internal/auth"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// streamLimiter holds the per-caller counts. Its maps hold only callers
// with a stream open or a bucket not yet refilled, so they stay bounded by
// the callers active in the last burst/rate seconds.
type streamLimiter struct {
	maxStreams int     // 0: no limit
	rate       float64 // opens per second; 0: no limit
	burst      float64
	now        func() time.Time

	mu      sync.Mutex
	open    map[string]int
	buckets map[string]*tokenBucket
	sweepAt int // sweep full buckets when buckets grows past this
}

type tokenBucket struct {
	tokens float64
	at     time.Time
}

func newStreamLimiter(cfg Config) *streamLimiter {
	return &streamLimiter{maxStreams: cfg.MaxStreamsPerIdentity, rate: cfg.MaxOpensPerSecond,
		burst: math.Max(1, math.Ceil(cfg.MaxOpensPerSecond)), now: time.Now,
		open: map[string]int{}, buckets: map[string]*tokenBucket{}, sweepAt: 1024}
}

// intercept admits Publish and Subscribe streams within the limits.
func (l *streamLimiter) intercept(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	subscribe := info.FullMethod == pb.Subscriber_Subscribe_FullMethodName
	if !subscribe && info.FullMethod != pb.Publisher_Publish_FullMethodName {
		return handler(srv, ss)
	}
	who := caller(ss.Context())
	if err := l.admit(who, subscribe); err != nil {
		return err
	}
	defer l.release(who)
	return handler(srv, ss)
}

func (l *streamLimiter) admit(who string, subscribe bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.maxStreams > 0 && l.open[who] >= l.maxStreams {
		return status.Errorf(codes.ResourceExhausted, "%s has %d Publish and Subscribe streams open, the limit (--max-streams-per-identity): close one first", who, l.open[who])
	}
	if subscribe && l.rate > 0 {
		now := l.now()
		b := l.buckets[who]
		if b == nil {
			b = &tokenBucket{tokens: l.burst, at: now}
			l.buckets[who] = b
			l.sweepLocked(now)
		}
		b.tokens = math.Min(l.burst, b.tokens+now.Sub(b.at).Seconds()*l.rate)
		b.at = now
		if b.tokens < 1 {
			wait := time.Duration((1 - b.tokens) / l.rate * float64(time.Second)).Round(time.Millisecond)
			return status.Errorf(codes.ResourceExhausted, "%s opens Subscribe streams faster than the limit of %g per second (--max-opens-per-second): retry after %s", who, l.rate, wait)
		}
		b.tokens--
	}
	l.open[who]++
	return nil
}

func (l *streamLimiter) release(who string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[who]--; l.open[who] <= 0 {
		delete(l.open, who)
	}
}

// sweepLocked drops buckets that have refilled (a fresh one is the same),
// once the map has doubled since the last sweep: amortised O(1) per open.
func (l *streamLimiter) sweepLocked(now time.Time) {
	if len(l.buckets) <= l.sweepAt {
		return
	}
	for who, b := range l.buckets {
		if b.tokens+now.Sub(b.at).Seconds()*l.rate >= l.burst {
			delete(l.buckets, who)
		}
	}
	l.sweepAt = max(1024, 2*len(l.buckets))
}

// caller names who a limit counts: the authenticated identity, else the
// peer's host (without the port: one client has many connections).
func caller(ctx context.Context) string {
	if id, ok := auth.FromContext(ctx); ok {
		return fmt.Sprintf("identity %q", id.Name)
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		host, _, err := net.SplitHostPort(p.Addr.String())
		if err != nil {
			host = p.Addr.String()
		}
		return fmt.Sprintf("address %s", host)
	}
	return "an unknown caller"
}
