package kafka

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"

	"github.com/streamgate/streamgate/broker"
	"github.com/streamgate/streamgate/broker/registry"
)

var (
	_ broker.Publisher = (*Broker)(nil)
	_ broker.Pinger    = (*Broker)(nil)
)

// Broker is the Kafka backend: one idempotent producer shared by every
// publish stream of the node, one client for Prepare's fenced saves, and a
// client per subscription the node reads.
type Broker struct {
	cfg      Config
	producer *kgo.Client
	txn      *kgo.Client // fenced saves (Prepare), at pinned versions
	metrics  *kprom.Metrics
	auth     saslWatch // notices refused SASL credentials (security.go)

	mu        sync.Mutex // guards consumers, aborted and subs
	consumers map[*consumer]bool
	aborted   bool
	subs      *subsLog // the subscription store, started on first use (subscriptions.go)

	registry.Lazy // broker.SubscriptionStore, over subscriptionStore
}

// New connects lazily: it fails only on a bad configuration, and brokers
// that do not answer yet show up as publish errors and failed pings.
func New(cfg Config) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := &Broker{cfg: cfg, consumers: map[*consumer]bool{}}
	b.Lazy.Open = b.subscriptionStore
	b.auth.sasl, b.auth.log = cfg.SASL, b.log()
	if cfg.Registerer != nil {
		b.metrics = kprom.NewMetrics("streamgate_kafka", kprom.Registerer(cfg.Registerer))
	}
	producer, err := kgo.NewClient(b.producerOpts()...)
	if err != nil {
		return nil, fmt.Errorf("kafka: producer: %w", err)
	}
	b.producer = producer
	txn, err := kgo.NewClient(append(b.commonOpts(), kgo.MaxVersions(fencedVersions()))...)
	if err != nil {
		producer.Close()
		return nil, fmt.Errorf("kafka: client: %w", err)
	}
	b.txn = txn
	return b, nil
}

// commonOpts are shared by every client this backend opens, TLS and SASL
// included: build every client from them.
func (b *Broker) commonOpts() []kgo.Opt {
	return append([]kgo.Opt{
		kgo.SeedBrokers(b.cfg.Brokers...),
		kgo.ClientID(b.cfg.ClientID),
		kgo.WithLogger(newLogger(b.cfg.Logger)),
		// After a broker comes back, metadata is refreshed at most this
		// often (franz-go's default of 5s delays recovery by as much).
		kgo.MetadataMinAge(time.Second),
	}, b.securityOpts()...)
}

func (b *Broker) producerOpts() []kgo.Opt {
	opts := b.commonOpts()
	if b.metrics != nil {
		// kprom registers its collectors once per registry, so only the
		// shared producer client carries them.
		opts = append(opts, kgo.WithHooks(b.metrics))
	}
	return append(opts,
		// Idempotent (franz-go's default, stated for the reader) with acks
		// from all in-sync replicas: no duplicates from retries, nothing
		// confirmed that a leader failover can lose.
		kgo.RequiredAcks(kgo.AllISRAcks()),
		// Keyed records by murmur2 exactly as the Java client; unkeyed
		// ones round-robin, one by one, so that a trickle spreads over the
		// shards (Kafka's sticky default put 200 CLI messages on one).
		kgo.RecordPartitioner(spreadPartitioner{}),
		// An unknown topic fails in milliseconds instead of a second of
		// metadata retries (FACTS.md).
		kgo.UnknownTopicRetries(0),
		kgo.RecordDeliveryTimeout(b.cfg.PublishTimeout),
		// API.md promises UNAVAILABLE after the publish timeout even when a
		// request is in flight to a broker that vanished; idempotency
		// alone would wait for its outcome forever. The cost: a message
		// failed that way may have been written, so a client that
		// publishes it again can make a duplicate (at-least-once).
		kgo.AllowIdempotentProduceCancellation(),
		kgo.ProducerBatchMaxBytes(int32(b.cfg.MaxMessageBytes)+1024),
		kgo.ProducerLinger(b.cfg.ProducerLinger),
	)
}

// Publish implements broker.Publisher.
func (b *Broker) Publish(ctx context.Context, msg *broker.Message, done func(broker.PublishResult)) {
	rec := &kgo.Record{Topic: msg.Topic, Key: msg.Key, Value: msg.Payload}
	if len(msg.Headers) > 0 {
		rec.Headers = make([]kgo.RecordHeader, len(msg.Headers))
		for i, h := range msg.Headers {
			rec.Headers[i] = kgo.RecordHeader{Key: h.Key, Value: h.Value}
		}
	}
	hctx, handedOff := handOff(ctx)
	defer handedOff()
	b.producer.Produce(hctx, rec, func(r *kgo.Record, err error) {
		if err != nil {
			done(broker.PublishResult{Err: b.auth.explain(translate(err))})
			return
		}
		done(broker.PublishResult{ID: encodeID(position{topic: r.Topic, partition: r.Partition, offset: r.Offset})})
	})
}

// Ping implements broker.Pinger: one metadata round trip.
func (b *Broker) Ping(ctx context.Context) error {
	return b.auth.explain(translate(b.producer.Ping(ctx)))
}

// Close flushes nothing: unconfirmed messages fail with ErrClosed.
func (b *Broker) Close() {
	b.closeSubscriptions()
	b.producer.Close()
	b.txn.Close()
}

// Abort closes every client at once, saving nothing: what a crash does.
// For tests of failure handling.
func (b *Broker) Abort() {
	b.mu.Lock()
	b.aborted = true
	cs := make([]*consumer, 0, len(b.consumers))
	for c := range b.consumers {
		cs = append(cs, c)
	}
	b.mu.Unlock()
	for _, c := range cs {
		c.cl.Close()
	}
	b.closeSubscriptions()
	b.producer.Close()
	b.txn.Close()
}

func (b *Broker) isAborted() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.aborted
}

// Flush waits until every message handed to Publish is confirmed or failed.
func (b *Broker) Flush(ctx context.Context) error {
	return b.producer.Flush(ctx)
}

// MaxMessageBytes is the size limit this backend was configured with.
func (b *Broker) MaxMessageBytes() int { return b.cfg.MaxMessageBytes }

// spreadPartitioner hashes keyed records as Kafka's Java client does
// (murmur2), so keys land where other Kafka clients put them, and deals
// unkeyed records round-robin over the partitions.
type spreadPartitioner struct{}

func (spreadPartitioner) ForTopic(topic string) kgo.TopicPartitioner {
	return &spreadTopic{keyed: kgo.StickyKeyPartitioner(nil).ForTopic(topic)}
}

// spreadTopic partitions one topic; franz-go calls it for one record at a
// time, so next needs no lock.
type spreadTopic struct {
	keyed kgo.TopicPartitioner
	next  int
}

func (p *spreadTopic) RequiresConsistency(r *kgo.Record) bool { return r.Key != nil }

func (p *spreadTopic) Partition(r *kgo.Record, n int) int {
	if r.Key != nil {
		return p.keyed.Partition(r, n)
	}
	p.next = (p.next + 1) % n
	return p.next
}

// handOff is the context Produce gets: ctx may end the wait for buffer
// space, as the contract says, but never the record once it is buffered.
// franz-go uses one context for both, and fails a partition's whole queue
// when its head record's context ends, so a caller that went away would
// fail everybody's messages behind its own. The record's context follows
// ctx only until done is called, right after Produce returns.
func handOff(ctx context.Context) (hctx context.Context, done func()) {
	if ctx.Done() == nil {
		return ctx, func() {} // cannot end: nothing to guard (the node's case)
	}
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel)
	return hctx, func() { stop() }
}
