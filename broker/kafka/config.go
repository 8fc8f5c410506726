// Package kafka implements the broker interfaces with franz-go. Offsets,
// partitions, commits and consumer groups are words of this package only.
package kafka

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config configures the Kafka backend.
type Config struct {
	// Brokers are the bootstrap addresses. Required.
	Brokers []string
	// ClientID names the gateway to the brokers. Default "streamgate".
	ClientID string
	// PublishTimeout bounds how long a message may wait for the brokers'
	// confirmation, retries included. Default 30s.
	PublishTimeout time.Duration
	// MaxMessageBytes is the largest message (key, payload and headers)
	// accepted. Default 1 MiB, Kafka's default max.message.bytes.
	MaxMessageBytes int
	// CommitInterval: acked positions are committed at least this often.
	// Default 5s.
	CommitInterval time.Duration
	// CommitEvery: a commit is made after this many acks of a
	// subscription, whichever comes first. Default 1000.
	CommitEvery int
	// MaxBufferedPerShard: a partition with more records fetched and not
	// committed than this is paused at the broker, and resumed when it has
	// drained to half. Default 1000.
	MaxBufferedPerShard int
	// TopicCheckInterval: how often a consumer checks that its topics still
	// exist and are the ones it started reading (a topic deleted and
	// created again is read from the new log's start). Default 10s.
	TopicCheckInterval time.Duration
	// FetchMaxPartitionBytes bounds what one fetch returns of one
	// partition (Kafka's max.partition.fetch.bytes; a first batch larger
	// than it still comes whole). Records fetched past a partition's
	// MaxBufferedPerShard are dropped and fetched again once it has
	// drained, so a fetch much larger than the room a partition has left
	// reads the same records twice: with franz-go's 1 MiB default and
	// 1 KiB messages a subscription read 1.5 times what it delivered.
	// Default 512 KiB.
	FetchMaxPartitionBytes int
	// ProducerLinger is how long the producer waits for more records to
	// fill a batch to a partition. Default 0: each batch goes as soon as
	// the previous one to its partition is answered. A few milliseconds
	// cut the gateway's CPU per message at low rates for as much latency
	// (BENCHMARKS.md).
	ProducerLinger time.Duration
	// GroupPrefix is put before a subscription's name to make its consumer
	// group id, so that streamgate's groups do not collide with other
	// applications'. Default "streamgate.".
	GroupPrefix string
	// SubscriptionsTopic is the compacted topic that holds every
	// subscription's settings (subscriptions.go), created on first use
	// with one partition. Default "__streamgate_subscriptions".
	SubscriptionsTopic string
	// TLS, when set, encrypts every connection to the brokers (TLSFiles
	// loads one from files). Default nil: plaintext.
	TLS *tls.Config
	// SASL, when its Mechanism is set, authenticates every connection
	// (security.go). Its String and LogValue leave the password out.
	SASL SASL
	// Logger receives franz-go's logs (at warn level and above). Default:
	// discarded.
	Logger *slog.Logger
	// Registerer, when set, receives franz-go's client metrics (kprom),
	// prefixed streamgate_kafka.
	Registerer prometheus.Registerer
}

// DefaultConfig returns the defaults for brokers.
func DefaultConfig(brokers ...string) Config {
	return Config{
		Brokers:                brokers,
		ClientID:               "streamgate",
		PublishTimeout:         30 * time.Second,
		MaxMessageBytes:        1 << 20,
		CommitInterval:         5 * time.Second,
		CommitEvery:            1000,
		MaxBufferedPerShard:    1000,
		FetchMaxPartitionBytes: 512 << 10,
		TopicCheckInterval:     10 * time.Second,
		GroupPrefix:            "streamgate.",
		SubscriptionsTopic:     "__streamgate_subscriptions",
	}
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	switch {
	case len(c.Brokers) == 0:
		return errors.New("kafka: Brokers: at least one address is required")
	case c.ClientID == "":
		return errors.New("kafka: ClientID: must not be empty")
	case c.SubscriptionsTopic == "":
		return errors.New("kafka: SubscriptionsTopic: must not be empty")
	case c.PublishTimeout <= 0:
		return fmt.Errorf("kafka: PublishTimeout: must be positive, got %s", c.PublishTimeout)
	case c.MaxMessageBytes <= 0:
		return fmt.Errorf("kafka: MaxMessageBytes: must be positive, got %d", c.MaxMessageBytes)
	case c.CommitInterval <= 0:
		return fmt.Errorf("kafka: CommitInterval: must be positive, got %s", c.CommitInterval)
	case c.CommitEvery < 1:
		return fmt.Errorf("kafka: CommitEvery: must be at least 1, got %d", c.CommitEvery)
	case c.MaxBufferedPerShard < 2:
		return fmt.Errorf("kafka: MaxBufferedPerShard: must be at least 2, got %d", c.MaxBufferedPerShard)
	case c.TopicCheckInterval <= 0:
		return fmt.Errorf("kafka: TopicCheckInterval: must be positive, got %s", c.TopicCheckInterval)
	case c.FetchMaxPartitionBytes < 1<<10 || c.FetchMaxPartitionBytes > 1<<30:
		return fmt.Errorf("kafka: FetchMaxPartitionBytes: must be between 1024 and 1073741824, got %d", c.FetchMaxPartitionBytes)
	case c.ProducerLinger < 0 || c.ProducerLinger > time.Minute:
		return fmt.Errorf("kafka: ProducerLinger: must be between 0 and 1m, got %s", c.ProducerLinger)
	}
	return c.SASL.validate()
}
