// Package node holds streamgate's gRPC services: publish streams, subscribe
// sessions and the per-subscription dispatcher. It speaks to the backend
// only through package broker.
package node

import (
	"fmt"
	"math"
	"os"
	"time"
)

// Config configures a node's services.
type Config struct {
	// NodeName is this node's name, reported to subscribers. Default: the
	// host name.
	NodeName string
	// PublishWindow is how many messages of one publish stream may await
	// their result before the node stops reading that stream. Default 1000.
	PublishWindow int
	// MaxBufferedBytes caps the bytes of all messages the node holds for
	// publishing, across streams; past it every stream waits. Default 64 MiB.
	MaxBufferedBytes int64
	// MaxMessageBytes is the largest message accepted (key, payload,
	// headers and topic). Default 1 MiB.
	MaxMessageBytes int
	// MaxHeaders is the most headers one published message may carry, and
	// MaxKeyBytes the longest key: a message over either fails alone with
	// INVALID_ARGUMENT. 0: no limit. Defaults 64 and 16 KiB.
	MaxHeaders  int
	MaxKeyBytes int
	// MaxAckIDs is the most message ids one ack, nack or
	// modify_ack_deadline request may carry; over it the stream ends with
	// INVALID_ARGUMENT. 0: no limit. Default 10,000 (ten times the default
	// MaxUnacked: a subscriber never holds more to name).
	MaxAckIDs int
	// KeepaliveMinTime: a client that pings more often than this (three
	// times in a row) is closed with GOAWAY ENHANCE_YOUR_CALM. It must stay
	// below the clients' ping interval (the Go client pings every 10 s).
	// Default 5s.
	KeepaliveMinTime time.Duration
	// MaxConnectionAge closes a connection (GOAWAY; clients reconnect,
	// through a load balancer perhaps to another node) once it is this old,
	// give or take 10%; its streams then have MaxConnectionAgeGrace to end
	// before they are cut. 0: no limit (the default). Grace default 30s.
	MaxConnectionAge      time.Duration
	MaxConnectionAgeGrace time.Duration
	// MaxStreamsPerConnection is the most concurrent calls one connection
	// may have (HTTP/2 MAX_CONCURRENT_STREAMS; clients queue past it).
	// Default 1000.
	MaxStreamsPerConnection int
	// MaxStreamsPerIdentity is the most Publish and Subscribe streams one
	// caller (its identity with auth on, else its host) may have open on
	// this node; past it a new one fails with RESOURCE_EXHAUSTED. 0: no
	// limit (the default).
	MaxStreamsPerIdentity int
	// MaxOpensPerSecond is how many Subscribe streams per second one
	// caller may open (a token bucket of that many, at least 1); past it
	// an open fails with RESOURCE_EXHAUSTED saying when to retry. 0: no
	// limit (the default).
	MaxOpensPerSecond float64
	// MaxUnacked is how many un-acked messages a subscriber may hold; at the
	// limit deliveries to it stop until it acks. A subscriber may ask for
	// less. Default 1000.
	MaxUnacked int
	// AckTimeout: a subscriber that holds a message un-acked for longer
	// gets a terminal DEADLINE_EXCEEDED notice and is disconnected; its
	// messages go to the shard's next owner. Default 60s.
	AckTimeout time.Duration
	// PollBatch is the most messages taken from the backend at once.
	// Default 500.
	PollBatch int
	// ShardRefreshInterval: how often a subscription's topics are asked
	// for their shards again, to pick up added ones. Default 30s.
	ShardRefreshInterval time.Duration
	// NoticeInterval: while the backend cannot be read, subscribers get an
	// UNAVAILABLE notice this often. Default 2s.
	NoticeInterval time.Duration
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	name, err := os.Hostname()
	if err != nil || name == "" {
		name = "streamgate"
	}
	return Config{
		NodeName:                name,
		PublishWindow:           1000,
		MaxBufferedBytes:        64 << 20,
		MaxMessageBytes:         1 << 20,
		MaxHeaders:              64,
		MaxKeyBytes:             16 << 10,
		MaxAckIDs:               10000,
		KeepaliveMinTime:        5 * time.Second,
		MaxConnectionAgeGrace:   30 * time.Second,
		MaxStreamsPerConnection: 1000,
		MaxUnacked:              1000,
		AckTimeout:              60 * time.Second,
		PollBatch:               500,
		NoticeInterval:          2 * time.Second,
		ShardRefreshInterval:    30 * time.Second,
	}
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	switch {
	case c.NodeName == "":
		return fmt.Errorf("node: NodeName: must not be empty")
	case c.PublishWindow < 1:
		return fmt.Errorf("node: PublishWindow: must be at least 1, got %d", c.PublishWindow)
	case c.MaxMessageBytes < 1:
		return fmt.Errorf("node: MaxMessageBytes: must be at least 1, got %d", c.MaxMessageBytes)
	case c.MaxHeaders < 0:
		return fmt.Errorf("node: MaxHeaders: must not be negative (0: no limit), got %d", c.MaxHeaders)
	case c.MaxKeyBytes < 0:
		return fmt.Errorf("node: MaxKeyBytes: must not be negative (0: no limit), got %d", c.MaxKeyBytes)
	case c.MaxAckIDs < 0:
		return fmt.Errorf("node: MaxAckIDs: must not be negative (0: no limit), got %d", c.MaxAckIDs)
	case c.KeepaliveMinTime <= 0:
		return fmt.Errorf("node: KeepaliveMinTime: must be positive, got %s", c.KeepaliveMinTime)
	case c.MaxConnectionAge < 0:
		return fmt.Errorf("node: MaxConnectionAge: must not be negative (0: no limit), got %s", c.MaxConnectionAge)
	case c.MaxConnectionAgeGrace < 0:
		return fmt.Errorf("node: MaxConnectionAgeGrace: must not be negative, got %s", c.MaxConnectionAgeGrace)
	case c.MaxStreamsPerConnection < 0 || int64(c.MaxStreamsPerConnection) > math.MaxUint32:
		return fmt.Errorf("node: MaxStreamsPerConnection: must be between 0 (no limit) and %d, got %d", uint32(math.MaxUint32), c.MaxStreamsPerConnection)
	case c.MaxStreamsPerIdentity < 0:
		return fmt.Errorf("node: MaxStreamsPerIdentity: must not be negative (0: no limit), got %d", c.MaxStreamsPerIdentity)
	case c.MaxOpensPerSecond < 0 || math.IsNaN(c.MaxOpensPerSecond) || math.IsInf(c.MaxOpensPerSecond, 0):
		return fmt.Errorf("node: MaxOpensPerSecond: must be a number not below 0 (0: no limit), got %g", c.MaxOpensPerSecond)
	case c.MaxBufferedBytes < int64(c.MaxMessageBytes):
		return fmt.Errorf("node: MaxBufferedBytes: must be at least MaxMessageBytes (%d), got %d", c.MaxMessageBytes, c.MaxBufferedBytes)
	case c.MaxUnacked < 1:
		return fmt.Errorf("node: MaxUnacked: must be at least 1, got %d", c.MaxUnacked)
	case c.AckTimeout <= 0:
		return fmt.Errorf("node: AckTimeout: must be positive, got %s", c.AckTimeout)
	case c.PollBatch < 1:
		return fmt.Errorf("node: PollBatch: must be at least 1, got %d", c.PollBatch)
	case c.ShardRefreshInterval <= 0:
		return fmt.Errorf("node: ShardRefreshInterval: must be positive, got %s", c.ShardRefreshInterval)
	case c.NoticeInterval <= 0:
		return fmt.Errorf("node: NoticeInterval: must be positive, got %s", c.NoticeInterval)
	}
	return nil
}
