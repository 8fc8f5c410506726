package node

// Hardening limits (issue 12, point 5) that are not part of one request's
// own validation: each names the flag that sets it, so an operator who
// reads the client's error knows what to raise.

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// checkAckIDs bounds the ids of one ack, nack or modify_ack_deadline: the
// dispatcher handles a request's ids in one go, so a request of millions
// would hold the subscription's loop for as long as it takes.
func (s *subscribeService) checkAckIDs(what string, n int) error {
	if max := s.cfg.MaxAckIDs; max > 0 && n > max {
		return invalidf("%s: %d message ids, over the limit of %d per request (--max-ack-ids); send them in smaller requests", what, n, max)
	}
	return nil
}

// limitServerOptions are the gRPC server's connection limits.
func limitServerOptions(cfg Config) []grpc.ServerOption {
	opts := []grpc.ServerOption{
		// Clients ping every 10 s to notice a frozen or vanished node
		// (client.DefaultDialOptions); gRPC's default policy would answer
		// pings more often than every 5 minutes with GOAWAY. A client
		// pinging faster than MinTime is closed: pings cost the server a
		// write each, and a flood of them is an attack (CVE-2019-9512).
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: cfg.KeepaliveMinTime, PermitWithoutStream: true}),
	}
	if cfg.MaxStreamsPerConnection > 0 {
		// Advertised to the client (HTTP/2 SETTINGS): gRPC clients queue
		// calls past it until a stream ends; one that ignores it gets
		// REFUSED_STREAM.
		opts = append(opts, grpc.MaxConcurrentStreams(uint32(cfg.MaxStreamsPerConnection)))
	}
	if cfg.MaxStreamsPerIdentity > 0 || cfg.MaxOpensPerSecond > 0 {
		// After auth's interceptors (server.go puts them first), so the
		// identity is known.
		opts = append(opts, grpc.ChainStreamInterceptor(newStreamLimiter(cfg).intercept))
	}
	if cfg.MaxConnectionAge > 0 {
		// Subscribe streams live for hours: without an age limit a load
		// balancer in front of the nodes never moves them to a node added
		// since. grpc-go takes a zero grace as "forever".
		grace := cfg.MaxConnectionAgeGrace
		if grace == 0 {
			grace = time.Nanosecond
		}
		opts = append(opts, grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionAge: cfg.MaxConnectionAge, MaxConnectionAgeGrace: grace}))
	}
	return opts
}
