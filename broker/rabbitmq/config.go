// Package rabbitmq implements the broker interfaces on RabbitMQ streams
// (RabbitMQ 3.10 and later, the stream plugin) with
// github.com/rabbitmq/rabbitmq-stream-go-client. Streams, offsets,
// producers and credits are words of this package only.
//
// A topic of N shards is N streams named "<topic>-0" .. "<topic>-<N-1>"
// (RabbitMQ 3.10 has no super streams): Shards finds N by asking for the
// streams in turn until one is missing, so the numbers must be contiguous.
// Keys pick their stream as Kafka's Java client picks a partition
// (murmur2, positive, modulo N), so a key lands on the same shard index as
// it would with the Kafka backend; unkeyed messages go round-robin.
//
// Saved positions live in a stream of their own (PositionsStream), see
// store.go: the server's stored offsets carry no metadata (acks above the
// position, delivery counts) and no fence.
package rabbitmq

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Config configures the RabbitMQ streams backend.
type Config struct {
	// URI is the stream protocol address,
	// rabbitmq-stream://user:password@host:5552/vhost. Required.
	URI string
	// PublishTimeout bounds how long a message may wait for the server's
	// confirmation. Default 30s.
	PublishTimeout time.Duration
	// MaxMessageBytes is the largest message (key, payload and headers)
	// accepted. Default 1 MiB.
	MaxMessageBytes int
	// MaxInFlight bounds the messages handed to Publish and not yet
	// confirmed; Publish waits (up to its ctx) beyond it. Default 10000.
	MaxInFlight int
	// SaveInterval: acked positions are saved at least this often.
	// Default 5s.
	SaveInterval time.Duration
	// SaveEvery: a save is made after this many acks of a subscription,
	// whichever comes first. Default 1000.
	SaveEvery int
	// MaxBufferedPerShard: a shard with more messages fetched and not saved
	// than this stops being read (its stream subscription is closed) and is
	// read again from its position when it has drained to half. Messages
	// the server had already sent beyond it are dropped and read again.
	// Default 1000.
	MaxBufferedPerShard int
	// PositionsStream is the stream that holds every subscription's saved
	// positions and fences. Default "__streamgate_positions".
	PositionsStream string
	// PositionsMaxAge is the positions stream's retention: a subscription
	// that saves nothing for this long loses its positions (consumers
	// re-save every position hourly). Default 7 days, as Kafka's
	// offsets.retention.minutes.
	PositionsMaxAge time.Duration
	// SubscriptionsStream is the stream that holds every subscription's
	// settings (subscriptions.go), declared on first use, without
	// retention. Default "__streamgate_subscriptions".
	SubscriptionsStream string
	// SaveTimeout bounds one write to the positions stream, from send to
	// reading it back. Default 10s.
	SaveTimeout time.Duration
	// ClockSkew is how far the gateway's clock may be ahead of the
	// server's: a shard that looks empty when a subscription that starts
	// at the latest message is prepared (positions.go, starts) starts at
	// the first message stamped at or after the subscription's creation
	// less this. Default 1s.
	ClockSkew time.Duration
	// StreamMaxAge, when set, is the retention of the streams CreateTopic
	// declares. Default 0: the server's default (unlimited).
	StreamMaxAge time.Duration
	// Logger receives the backend's warnings. Default: discarded.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults for uri.
func DefaultConfig(uri string) Config {
	return Config{
		URI:                 uri,
		PublishTimeout:      30 * time.Second,
		MaxMessageBytes:     1 << 20,
		MaxInFlight:         10000,
		SaveInterval:        5 * time.Second,
		SaveEvery:           1000,
		MaxBufferedPerShard: 1000,
		PositionsStream:     "__streamgate_positions",
		PositionsMaxAge:     7 * 24 * time.Hour,
		SubscriptionsStream: "__streamgate_subscriptions",
		SaveTimeout:         10 * time.Second,
		ClockSkew:           time.Second,
	}
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	switch {
	case !strings.HasPrefix(c.URI, "rabbitmq-stream://") && !strings.HasPrefix(c.URI, "rabbitmq-stream+tls://"):
		return fmt.Errorf("rabbitmq: URI: want rabbitmq-stream://user:password@host:port/, got %q", c.URI)
	case c.PublishTimeout <= 0:
		return fmt.Errorf("rabbitmq: PublishTimeout: must be positive, got %s", c.PublishTimeout)
	case c.MaxMessageBytes <= 0:
		return fmt.Errorf("rabbitmq: MaxMessageBytes: must be positive, got %d", c.MaxMessageBytes)
	case c.MaxInFlight < 1:
		return fmt.Errorf("rabbitmq: MaxInFlight: must be at least 1, got %d", c.MaxInFlight)
	case c.SaveInterval <= 0:
		return fmt.Errorf("rabbitmq: SaveInterval: must be positive, got %s", c.SaveInterval)
	case c.SaveEvery < 1:
		return fmt.Errorf("rabbitmq: SaveEvery: must be at least 1, got %d", c.SaveEvery)
	case c.MaxBufferedPerShard < 2:
		return fmt.Errorf("rabbitmq: MaxBufferedPerShard: must be at least 2, got %d", c.MaxBufferedPerShard)
	case c.PositionsStream == "":
		return errors.New("rabbitmq: PositionsStream: must not be empty")
	case c.SubscriptionsStream == "" || c.SubscriptionsStream == c.PositionsStream:
		return fmt.Errorf("rabbitmq: SubscriptionsStream: must be set and differ from PositionsStream, got %q", c.SubscriptionsStream)
	case c.PositionsMaxAge <= 0:
		return fmt.Errorf("rabbitmq: PositionsMaxAge: must be positive, got %s", c.PositionsMaxAge)
	case c.SaveTimeout <= 0:
		return fmt.Errorf("rabbitmq: SaveTimeout: must be positive, got %s", c.SaveTimeout)
	case c.ClockSkew < 0:
		return fmt.Errorf("rabbitmq: ClockSkew: must not be negative, got %s", c.ClockSkew)
	}
	return nil
}

func (c *Config) log() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}
