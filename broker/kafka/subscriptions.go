package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/streamgate/streamgate/broker"
	"github.com/streamgate/streamgate/broker/registry"
)

// The subscription store (broker.SubscriptionStore) on Kafka: every
// subscription's settings are records of one compacted topic
// (Config.SubscriptionsTopic, one partition), keyed by the subscription's
// name, in the format and with the compare-and-set rules of
// broker/registry. Every Broker reads the topic from its start into a
// registry.View, on a goroutine and a client of its own (started on the
// first use of the store, stopped by Close), so any node answers for any
// subscription, and a write learns whether it took effect by reading its
// own record back. The partition's single order decides every race.
//
// The topic is created on the first write (a missing topic reads as no
// subscriptions) with cleanup.policy=compact, so it holds about one record
// per subscription, and min.compaction.lag.ms of a day, so a record is
// never compacted away within a day of being written: the restate or
// tombstone a writer appends after a rejected record (registry/view.go)
// always lands long before. The residual risk is written down there.

const (
	// subsPartition is the topic's only partition.
	subsPartition = 0
	// subsCompactionLag is the topic's min.compaction.lag.ms: one day.
	subsCompactionLag = "86400000"
	// subsTopicCheck is how often a reader looks for the topic while it
	// does not exist (another node may create it).
	subsTopicCheck = time.Second
)

var _ broker.SubscriptionStore = (*Broker)(nil)

// subsLog is the store's reader and writer of the topic; it implements
// registry.Log and registry.Ender.
type subsLog struct {
	b     *Broker
	topic string
	view  *registry.View
	store *registry.Store
	cl    *kgo.Client // the reader's own client: it consumes only the topic
	adm   *kadm.Client
	kick  chan struct{} // capacity 1: look for the topic now

	stop context.CancelFunc
	done chan struct{} // closed when run returns

	known atomic.Bool // the topic is known to exist
}

// subscriptionStore returns the store, starting its reader on first use.
func (b *Broker) subscriptionStore() (*registry.Store, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.subs != nil {
		return b.subs.store, nil
	}
	if b.aborted {
		return nil, broker.ErrClosed
	}
	cl, err := kgo.NewClient(append(b.commonOpts(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)...)
	if err != nil {
		return nil, fmt.Errorf("kafka: subscription store client: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &subsLog{
		b:     b,
		topic: b.cfg.SubscriptionsTopic,
		view:  registry.NewView(true, b.log()),
		cl:    cl,
		adm:   kadm.NewClient(cl),
		kick:  make(chan struct{}, 1),
		stop:  cancel,
		done:  make(chan struct{}),
	}
	l.store = registry.NewStore(l, l.view, registry.Options{Logger: b.log()})
	b.subs = l
	go func() { // owned by closeSubscriptions, which waits for done
		defer close(l.done)
		l.run(ctx)
	}()
	return l.store, nil
}

// closeSubscriptions stops the reader; writes still waiting fail with
// ErrClosed.
func (b *Broker) closeSubscriptions() {
	b.mu.Lock()
	l := b.subs
	if l == nil {
		// Nothing started; none may start now either (Abort, or Close:
		// the producer is about to close).
		b.subs = &subsLog{store: registry.NewStore(closedLog{}, closedView(), registry.Options{})}
	}
	b.mu.Unlock()
	if l == nil || l.cl == nil {
		return
	}
	l.stop()
	<-l.done
	l.cl.Close()
	l.view.Close(broker.ErrClosed)
}

// run reads the topic into the view until ctx ends.
func (l *subsLog) run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for !l.exists(ctx) {
		t.Reset(subsTopicCheck)
		select {
		case <-ctx.Done():
			return
		case <-l.kick:
		case <-t.C:
		}
	}
	l.cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{l.topic: {subsPartition: kgo.NewOffset().AtStart()}})
	for {
		fs := l.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		failed := false
		fs.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				failed = true
				l.b.log().Warn("reading the subscription topic failed; retrying", "topic", topic, "err", err)
			}
		})
		fs.EachRecord(func(r *kgo.Record) {
			l.view.Apply(r.Offset, string(r.Key), r.Value)
		})
		if failed && fs.NumRecords() == 0 {
			t.Reset(subsTopicCheck) // errors come back at once: do not spin
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}
}

// exists says whether the topic exists (false also when the brokers do
// not answer: the reader looks again).
func (l *subsLog) exists(ctx context.Context) bool {
	ok, _ := l.probe(ctx)
	return ok
}

// probe asks a broker whether the topic exists: kadm answers from
// franz-go's metadata cache, which may not show a topic created less than
// MetadataMinAge ago (a direct metadata request also refreshes that cache).
func (l *subsLog) probe(ctx context.Context) (bool, error) {
	if l.known.Load() {
		return true, nil
	}
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(l.topic)
	req.Topics = append(req.Topics, rt)
	req.AllowAutoTopicCreation = false
	resp, err := req.RequestWith(ctx, l.cl)
	if err != nil {
		return false, translate(err)
	}
	for _, t := range resp.Topics {
		if t.Topic == nil || *t.Topic != l.topic {
			continue
		}
		err := kerr.ErrorForCode(t.ErrorCode)
		switch {
		case errors.Is(err, kerr.UnknownTopicOrPartition):
			return false, nil
		case err != nil:
			return false, translate(err)
		case len(t.Partitions) > 0:
			l.known.Store(true)
			return true, nil
		}
	}
	return false, nil
}

// End implements registry.Ender: the partition's end offset; a topic that
// does not exist is empty.
func (l *subsLog) End(ctx context.Context) (int64, error) {
	signal(l.kick)
	if ok, err := l.probe(ctx); err != nil || !ok {
		return 0, err
	}
	ends, err := l.adm.ListEndOffsets(ctx, l.topic)
	if err != nil {
		return 0, translate(err)
	}
	o, ok := ends.Lookup(l.topic, subsPartition)
	switch {
	case !ok || errors.Is(o.Err, kerr.UnknownTopicOrPartition):
		return 0, nil
	case o.Err != nil:
		return 0, translate(o.Err)
	}
	return o.Offset, nil
}

// Append implements registry.Log with the backend's idempotent producer.
func (l *subsLog) Append(ctx context.Context, key string, value []byte) (int64, error) {
	if err := l.ensureTopic(ctx); err != nil {
		return -1, err
	}
	for {
		off, err := l.produce(ctx, &kgo.Record{Topic: l.topic, Partition: subsPartition, Key: []byte(key), Value: value})
		if !errors.Is(err, broker.ErrTopicNotFound) {
			return off, err
		}
		// Just created: the producer's metadata may not show it yet.
		select {
		case <-ctx.Done():
			return -1, err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (l *subsLog) produce(ctx context.Context, rec *kgo.Record) (int64, error) {
	res := make(chan error, 1)
	hctx, handedOff := handOff(ctx)
	l.b.producer.Produce(hctx, rec, func(_ *kgo.Record, err error) { res <- err })
	handedOff()
	select {
	case err := <-res:
		if err != nil {
			return -1, translate(err)
		}
		return rec.Offset, nil
	case <-ctx.Done():
		return -1, fmt.Errorf("%w: writing to the subscription topic: %w", broker.ErrUnavailable, ctx.Err())
	}
}

// ensureTopic creates the topic unless it is known to exist.
func (l *subsLog) ensureTopic(ctx context.Context) error {
	if l.known.Load() {
		return nil
	}
	compact, lag := "compact", subsCompactionLag
	resp, err := l.adm.CreateTopic(ctx, 1, -1, map[string]*string{
		"cleanup.policy":        &compact,
		"min.compaction.lag.ms": &lag,
	}, l.topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("creating the subscription topic %q: %w", l.topic, translate(err))
	}
	l.known.Store(true)
	signal(l.kick) // the reader may be waiting for it
	return nil
}

// closedLog and closedView make the store of a Broker closed before its
// store was started: every call fails with ErrClosed.
type closedLog struct{}

func (closedLog) Append(context.Context, string, []byte) (int64, error) { return -1, broker.ErrClosed }

func closedView() *registry.View {
	v := registry.NewView(true, nil)
	v.Close(broker.ErrClosed)
	return v
}
