package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rabbitmq/rabbitmq-stream-go-client/pkg/amqp"
	"github.com/rabbitmq/rabbitmq-stream-go-client/pkg/stream"

	"github.com/streamgate/streamgate/broker"
	"github.com/streamgate/streamgate/broker/cursor"
)

var _ broker.Seeker = (*Broker)(nil)

// Seek implements broker.Seeker with two records per shard in the
// positions store (store.go): a claim, which makes the seek the shard's
// holder (so that every later save of a reader that still holds it is
// invalid: it reports ShardLost), then a save under that claim of the
// target position, carrying only the subscription's origin. A save that
// another claim overtook (a reader loading the shard at that moment) is
// retried with a new claim: the seek wins, and that reader loses the
// shard.
//
// Targets: the earliest is the offset of the first message the stream
// holds; the latest is the offset after its last chunk (endOffset). A
// time: RabbitMQ 3.10 attaches a subscription at a timestamp only at
// chunk granularity, by the server's clock, while a message's publish time
// is the publisher's; so the shard is read from its chunk at the time less
// ClockSkew on, and the target is the first message, in log order, whose
// publish time is at or after the time; the end when none comes within
// endProbeWait of the last one read. That reads at most ClockSkew's worth
// of messages before the target. A shard where nothing is found (empty,
// or too slow to answer) gets an unresolved position from the origin: on
// an empty shard that is every message that comes.
func (b *Broker) Seek(ctx context.Context, subscription string, shards []broker.ShardID, to broker.SeekTo) error {
	todo := map[posKey]bool{}
	for _, s := range shards {
		todo[posKey{subscription, s.Topic, s.Index}] = true
	}
	err := cursor.Retry(ctx, func() (bool, error) {
		keys := make([]posKey, 0, len(todo))
		for k := range todo {
			keys = append(keys, k)
		}
		done, err := b.seekOnce(ctx, subscription, keys, to)
		for _, k := range done {
			delete(todo, k)
		}
		if err == nil && len(todo) > 0 {
			err = fmt.Errorf("%d shard(s) were claimed by a reader while seeking", len(todo))
		}
		return len(todo) == 0, err
	})
	if err != nil {
		return fmt.Errorf("rabbitmq: seek %q: %w", subscription, err)
	}
	return nil
}

// seekOnce claims keys, writes their targets under the claims, and
// returns those written.
func (b *Broker) seekOnce(ctx context.Context, subscription string, keys []posKey, to broker.SeekTo) ([]posKey, error) {
	claims := make([]record, len(keys))
	for i, k := range keys {
		claims[i] = record{kind: recClaim, key: k}
	}
	outs := b.store.write(ctx, claims)
	// The claims are applied: no reader saves from here on, so the origin
	// the view holds now is the subscription's.
	o := originOf(b.store.snapshot(subscription), broker.SubscriptionSpec{})
	var errs []error
	var held []posKey
	holders := map[posKey]string{}
	for i, out := range outs {
		if out.err != nil {
			errs = append(errs, out.err)
			continue
		}
		held = append(held, keys[i])
		holders[keys[i]] = out.state.holder
	}
	targets := make([]position, len(held))
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, k := range held {
		wg.Add(1)
		go func() {
			defer wg.Done()
			at, err := b.seekTarget(ctx, shardOf(k), to)
			targets[i] = startOf(o)
			if at >= 0 {
				targets[i].next = at
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	saves := make([]record, len(held))
	for i, k := range held {
		saves[i] = record{kind: recSave, key: k, holder: holders[k], n: 1, pos: targets[i]}
	}
	var done []posKey
	for i, out := range b.store.write(ctx, saves) {
		switch {
		case out.err != nil:
			errs = append(errs, out.err)
		case out.valid:
			done = append(done, held[i])
		}
	}
	return done, errors.Join(errs...)
}

// seekTarget is the offset a shard moves to, or -1 when it has none to
// tell (see Seek).
func (b *Broker) seekTarget(ctx context.Context, s broker.ShardID, to broker.SeekTo) (int64, error) {
	switch to.Kind {
	case broker.SeekEarliest:
		first, _, err := b.probe(ctx, s, stream.OffsetSpecification{}.First())
		return first, err
	case broker.SeekLatest:
		return b.endOffset(ctx, s)
	case broker.SeekTime:
		return b.offsetAt(ctx, s, to.Time)
	}
	return -1, fmt.Errorf("seek: unknown target kind %d", to.Kind)
}

// offsetAt reads a shard from its chunk at t less ClockSkew and returns
// the offset of the first message published at or after t; the offset
// after the last message read when none is; -1 when nothing was read.
func (b *Broker) offsetAt(ctx context.Context, s broker.ShardID, t time.Time) (int64, error) {
	var (
		mu    sync.Mutex // guards found and last; the handler runs on the client's goroutine
		found = int64(-1)
		last  = int64(-1)
	)
	activity := make(chan struct{}, 1)
	sc, err := b.subscribe(streamName(s), func(cc stream.ConsumerContext, m *amqp.Message) {
		off := cc.Consumer.GetOffset()
		mu.Lock()
		if found < 0 && off > last {
			last = off
			if !publishTimeOf(m).Before(t) {
				found = off
			}
		}
		mu.Unlock()
		signal(activity) // never blocks
	}, stream.NewConsumerOptions().
		SetOffset(stream.OffsetSpecification{}.Timestamp(t.UnixMilli()-b.cfg.ClockSkew.Milliseconds())).
		SetManualCommit().
		SetCRCCheck(false).
		SetInitialCredits(1).
		SetClientProvidedName("streamgate-seek"))
	if err != nil {
		return -1, translate(fmt.Errorf("reading %s: %w", streamName(s), err))
	}
	defer b.unsubscribe(sc)
	quiet := time.NewTimer(endProbeWait)
	defer quiet.Stop()
	for {
		select {
		case <-activity:
			mu.Lock()
			f := found
			mu.Unlock()
			if f >= 0 {
				return f, nil
			}
			quiet.Reset(endProbeWait)
		case <-quiet.C:
			mu.Lock()
			defer mu.Unlock()
			if found >= 0 {
				return found, nil
			}
			if last >= 0 {
				return last + 1, nil
			}
			// Nothing at or after the chunk: the end, if the shard has
			// messages at all.
			return b.endOffset(ctx, s)
		case <-ctx.Done():
			return -1, fmt.Errorf("%w: reading %s: %w", broker.ErrUnavailable, streamName(s), ctx.Err())
		}
	}
}

// publishTimeOf is a message's publish time as the consumer delivers it:
// the envelope's for the gateway's own messages, else the AMQP creation
// time (zero when absent: before every time).
func publishTimeOf(m *amqp.Message) time.Time {
	var body []byte
	for _, part := range m.Data {
		body = append(body, part...)
	}
	if m.Properties != nil && m.Properties.ContentType == envelopeType {
		var msg broker.Message
		if _, at, err := decodeEnvelope(body, &msg); err == nil {
			return at
		}
	}
	if m.Properties != nil {
		return m.Properties.CreationTime
	}
	return time.Time{}
}
