package cluster

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
)

// Config configures membership. Start from DefaultConfig: Validate rejects
// the zero values of the timing fields rather than guessing, because a zero
// BindPort is meaningful (pick a free port) and the two must not be confused.
type Config struct {
	// NodeName must be unique in the cluster. Default: the host name.
	NodeName string

	// BindAddr is the IP address the gossip listeners (UDP and TCP) bind.
	// Default "0.0.0.0".
	BindAddr string
	// BindPort is the gossip port, UDP and TCP. Default 7946; 0 picks a free
	// port (tests).
	BindPort int

	// AdvertiseAddr is the host name or IP other nodes use to reach this
	// one; a host name is resolved once at Start. Default: derived by
	// memberlist (the bound IP, or a private IP when bound to 0.0.0.0).
	AdvertiseAddr string
	// AdvertisePort is the port other nodes use. Default (0): the bound port.
	AdvertisePort int

	// Join lists seed addresses, host[:port] (default port: BindPort), host
	// names allowed. A background loop tries them every JoinRetryInterval
	// while this node is alone, so seeds may come up later than this node.
	Join []string
	// JoinRetryInterval is how often the seeds are tried while this node
	// knows no other member. Default 1s.
	JoinRetryInterval time.Duration
	// RejoinInterval is how often the seeds are contacted again once joined.
	// Dead nodes are forgotten after a while, so without it two halves of a
	// cluster that declared each other dead (a network split longer than
	// the suspicion timeout) would stay apart for good. Default 30s; 0
	// disables.
	RejoinInterval time.Duration

	// SecretKey turns on gossip encryption (AES-GCM). 16, 24 or 32 bytes;
	// every node needs the same key. Default: none.
	SecretKey []byte

	// GRPCAddr is this node's gRPC address as other nodes and clients should
	// dial it; it is gossiped with the node's state and in its memberlist
	// metadata (at most 256 bytes). Default: empty.
	GRPCAddr string

	// Failure detection. The defaults declare a killed node dead on every
	// survivor in 1.4-2.5 s on loopback (package tests, 3 nodes), against
	// 5-6 s with memberlist's DefaultLANConfig. A dead node is probed by
	// some survivor within about one ProbeInterval (each member probes
	// another in turn every interval), suspected when no ack came within
	// that interval, and declared dead when the suspicion timeout (below)
	// ends. The price is paid on an overloaded machine: a node whose
	// goroutines do not run for a few hundred milliseconds is suspected, and
	// one that cannot refute within the suspicion timeout is declared dead:
	// the others drop its state, claims included, until its refutation
	// reaches them (it then rejoins by itself; streamgate_cluster_refutations_total
	// counts it). Measured over 20 s, 3 nodes, 2 cores: none with 16 busy
	// goroutines in the process; with 64, 5-12 false deaths (4-5 with
	// ProbeInterval 400ms and ProbeTimeout 200ms, which detect in 1.9-2.7 s;
	// none with memberlist's LAN timings). Raise ProbeInterval and
	// ProbeTimeout together where that matters more than failover time.

	// ProbeInterval is the time between probes of one random member.
	// Default 300ms (memberlist LAN: 1s).
	ProbeInterval time.Duration
	// ProbeTimeout is how long a probe waits for a direct ack before asking
	// other members to probe indirectly. Default 150ms (LAN: 500ms).
	ProbeTimeout time.Duration
	// SuspicionMult sets the suspicion timeout: SuspicionMult *
	// max(1, log10(members)) * ProbeInterval. Default 3 (LAN: 4).
	SuspicionMult int
	// SuspicionMaxTimeoutMult bounds how much longer the suspicion timeout
	// is while other members have not confirmed the suspicion: memberlist
	// starts the timer at the maximum and shrinks it to the minimum as
	// SuspicionMult-2 confirmations arrive, once it counts at least
	// SuspicionMult members (recently dead ones included). Default 2 (LAN:
	// 6, which stretched one measured detection to 19 s).
	SuspicionMaxTimeoutMult int
	// GossipInterval is the time between gossip rounds, which carry
	// memberlist's alive, suspect and dead messages. Default 100ms (LAN:
	// 200ms).
	GossipInterval time.Duration
	// PushPullInterval is the time between full state exchanges with one
	// random member: the anti-entropy that repairs any state update the
	// direct sends missed. Default 2s (LAN: 30s).
	PushPullInterval time.Duration
	// TCPTimeout bounds each TCP exchange: state sends, push/pull, joins.
	// Default 2s (LAN: 10s).
	TCPTimeout time.Duration

	// Standing (standing.go): when this node stops acting on its claims
	// because the others may be taking them over. The others can declare
	// it dead no sooner than a probe round and the shortest suspicion
	// timeout after it went quiet, (SuspicionMult+1) * ProbeInterval (1.2 s
	// with the defaults); both bounds below must be shorter. 0 derives
	// each from the failure detection timings.

	// FreezeBound: a process that did not run for longer than this (its
	// monotonic clock jumped) gives up its standing. Default (0): 3/8 of
	// (SuspicionMult+1) * ProbeInterval, 450ms.
	FreezeBound time.Duration
	// ContactBound: a node that heard nothing from any other member for
	// longer than this gives up its standing. Default (0): 5/8 of
	// (SuspicionMult+1) * ProbeInterval, 750ms.
	ContactBound time.Duration
	// AloneGrace: a node left without other members after it lost its
	// standing (its peers died, or it is on the small side of a split)
	// waits this long before it acts on its claims again, long enough for
	// the other side of a split to declare it dead and take its shards.
	// Default (0): (SuspicionMult*SuspicionMaxTimeoutMult+1) *
	// ProbeInterval, 2.1s.
	AloneGrace time.Duration

	// WrapTransport, when set, wraps the network transport memberlist uses:
	// tests use it to cut the links between some members. Default: none.
	WrapTransport func(memberlist.NodeAwareTransport) memberlist.NodeAwareTransport

	// Logger receives memberlist's logs and this package's. Default: discard.
	Logger *slog.Logger
	// Registerer, if set, receives the streamgate_cluster_* metrics; they
	// are unregistered when the cluster stops.
	Registerer prometheus.Registerer
}

// DefaultConfig returns the documented defaults, with the host name as
// NodeName (empty if the host name is unknown; Validate then says so).
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		NodeName:                host,
		BindAddr:                "0.0.0.0",
		BindPort:                7946,
		JoinRetryInterval:       time.Second,
		RejoinInterval:          30 * time.Second,
		ProbeInterval:           300 * time.Millisecond,
		ProbeTimeout:            150 * time.Millisecond,
		SuspicionMult:           3,
		SuspicionMaxTimeoutMult: 2,
		GossipInterval:          100 * time.Millisecond,
		PushPullInterval:        2 * time.Second,
		TCPTimeout:              2 * time.Second,
	}
}

// minTakeover is the soonest the other members can declare this node dead
// after it went quiet: a probe round, then the shortest suspicion timeout
// (fewer than 10 members; more members only lengthen it).
func (c *Config) minTakeover() time.Duration {
	return time.Duration(c.SuspicionMult+1) * c.ProbeInterval
}

// derived fills the standing bounds left at 0.
func (c Config) derived() Config {
	if c.FreezeBound == 0 {
		c.FreezeBound = c.minTakeover() * 3 / 8
	}
	if c.ContactBound == 0 {
		c.ContactBound = c.minTakeover() * 5 / 8
	}
	if c.AloneGrace == 0 {
		c.AloneGrace = time.Duration(c.SuspicionMult*c.SuspicionMaxTimeoutMult+1) * c.ProbeInterval
	}
	return c
}

// maxGRPCAddrLen keeps the node metadata well below memberlist's 512-byte
// cap, which panics when exceeded.
const maxGRPCAddrLen = 256

// ConfigError names the Config field that Validate rejected.
type ConfigError struct {
	Field   string
	Problem string
}

func (e *ConfigError) Error() string {
	return "cluster: invalid config: " + e.Field + ": " + e.Problem
}

// Validate checks every field and reports the first bad one as a
// *ConfigError.
func (c *Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return &ConfigError{Field: field, Problem: fmt.Sprintf(format, args...)}
	}
	switch {
	case strings.TrimSpace(c.NodeName) == "":
		return bad("NodeName", "required (unique in the cluster)")
	case net.ParseIP(c.BindAddr) == nil:
		return bad("BindAddr", "%q is not an IP address", c.BindAddr)
	case c.BindPort < 0 || c.BindPort > 65535:
		return bad("BindPort", "%d is out of range 0-65535", c.BindPort)
	case c.AdvertisePort < 0 || c.AdvertisePort > 65535:
		return bad("AdvertisePort", "%d is out of range 0-65535", c.AdvertisePort)
	case c.JoinRetryInterval <= 0:
		return bad("JoinRetryInterval", "must be positive (default 1s)")
	case c.RejoinInterval < 0:
		return bad("RejoinInterval", "must not be negative (0 disables)")
	case len(c.SecretKey) != 0 && len(c.SecretKey) != 16 && len(c.SecretKey) != 24 && len(c.SecretKey) != 32:
		return bad("SecretKey", "must be 16, 24 or 32 bytes, not %d", len(c.SecretKey))
	case len(c.GRPCAddr) > maxGRPCAddrLen:
		return bad("GRPCAddr", "longer than %d bytes", maxGRPCAddrLen)
	case c.ProbeInterval <= 0:
		return bad("ProbeInterval", "must be positive (default 300ms)")
	case c.ProbeTimeout <= 0 || c.ProbeTimeout >= c.ProbeInterval:
		return bad("ProbeTimeout", "must be positive and shorter than ProbeInterval (default 150ms)")
	case c.SuspicionMult < 1:
		return bad("SuspicionMult", "must be at least 1 (default 3)")
	case c.SuspicionMaxTimeoutMult < 1:
		return bad("SuspicionMaxTimeoutMult", "must be at least 1 (default 2)")
	case c.GossipInterval <= 0:
		return bad("GossipInterval", "must be positive (default 100ms)")
	case c.PushPullInterval <= 0:
		return bad("PushPullInterval", "must be positive: it repairs missed updates (default 2s)")
	case c.TCPTimeout <= 0:
		return bad("TCPTimeout", "must be positive (default 2s)")
	case c.FreezeBound < 0 || c.FreezeBound >= c.minTakeover():
		return bad("FreezeBound", "must be shorter than (SuspicionMult+1) * ProbeInterval = %s, the soonest the others take this node's shards (0: derived)", c.minTakeover())
	case c.ContactBound < 0 || c.ContactBound >= c.minTakeover():
		return bad("ContactBound", "must be shorter than (SuspicionMult+1) * ProbeInterval = %s, the soonest the others take this node's shards (0: derived)", c.minTakeover())
	case c.AloneGrace < 0:
		return bad("AloneGrace", "must not be negative (0: derived)")
	}
	for i, s := range c.Join {
		if strings.TrimSpace(s) == "" || strings.ContainsAny(s, " \t,") {
			return bad(fmt.Sprintf("Join[%d]", i), "%q is not a host[:port]", s)
		}
	}
	return nil
}
