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

// originOf is the subscription's origin as its saved positions tell (the
// earliest creation), or a new one, created now as spec asks.
func originOf(have map[posKey]keyState, spec broker.SubscriptionSpec) cursor.Origin {
	var o cursor.Origin
	for _, st := range have {
		if c := st.pos.meta.Origin; st.have && c.CreatedMs > 0 && (o.CreatedMs == 0 || c.CreatedMs < o.CreatedMs) {
			o = c
		}
	}
	if o.CreatedMs == 0 {
		o = cursor.Origin{CreatedMs: time.Now().UnixMilli(), Earliest: spec.Start == broker.StartEarliest}
	}
	return o
}

// startOf is the position a shard without one starts at: unresolved, from
// the subscription's origin (the first message at or after its creation,
// or the first held). The offset is fixed by the first message read.
func startOf(o cursor.Origin) position { return position{next: -1, meta: cursor.Saved{Origin: o}} }

// Prepare implements broker.Subscriber. A shard without a position gets a
// start record (store.go); the first start in the log wins, so Prepares
// that run at once agree. No reader is disturbed: a start never applies
// over a position.
func (b *Broker) Prepare(ctx context.Context, spec broker.SubscriptionSpec, shards []broker.ShardID) error {
	keys := make([]posKey, len(shards))
	for i, s := range shards {
		keys[i] = posKey{spec.Name, s.Topic, s.Index}
	}
	have, err := b.store.read(ctx, keys)
	if err != nil {
		return err
	}
	var missing []posKey
	for _, k := range keys {
		if !have[k].have {
			missing = append(missing, k)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	starts, err := b.starts(ctx, spec, missing)
	if err != nil {
		return fmt.Errorf("choosing the start of subscription %q: %w", spec.Name, err)
	}
	recs := make([]record, len(missing))
	for i, k := range missing {
		recs[i] = record{kind: recStart, key: k, pos: starts[i]}
	}
	for _, out := range b.store.write(ctx, recs) {
		if out.err != nil {
			return fmt.Errorf("saving the start of subscription %q: %w", spec.Name, out.err)
		}
	}
	return nil
}

// starts chooses the start of each of keys, shards of spec without a
// position. A subscription that starts at the earliest starts unresolved
// at the first message held. One that starts at the latest starts at the
// shard's end offset now, which RabbitMQ 3.10 only tells by delivering its
// last chunk (endOffset); a shard that delivers nothing is empty, or slow
// to answer, and starts unresolved at the first message stamped at or
// after now less ClockSkew (exact for an empty shard).
func (b *Broker) starts(ctx context.Context, spec broker.SubscriptionSpec, keys []posKey) ([]position, error) {
	o := originOf(b.store.snapshot(spec.Name), spec)
	out := make([]position, len(keys))
	for i := range out {
		out[i] = startOf(o)
	}
	if o.Earliest {
		return out, nil
	}
	errs := make([]error, len(keys))
	var wg sync.WaitGroup
	for i, k := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			end, err := b.endOffset(ctx, shardOf(k))
			if err == nil && end >= 0 {
				out[i].next = end
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// endProbeWait is how long endOffset waits for a shard's last chunk before
// it takes the shard for empty. The server sends the chunk as soon as the
// subscription is made, within milliseconds; a wrong guess (a slow server)
// costs at most ClockSkew of older messages (see starts).
const endProbeWait = time.Second

// endOffset is the offset after a shard's last message, or -1 when it has
// none: a short subscription at the last chunk reads its first message's
// offset and the chunk's entry count. Entries stand in for messages (they
// differ only for sub-batches, which this backend never writes), so for
// another client's sub-batched chunk it errs low: a few older messages are
// delivered, none is missed.
func (b *Broker) endOffset(ctx context.Context, s broker.ShardID) (int64, error) {
	first, entries, err := b.probe(ctx, s, stream.OffsetSpecification{}.Last())
	if err != nil || first < 0 {
		return -1, err
	}
	return first + entries, nil
}

// probe subscribes to a shard at spec for as long as it takes to get the
// first message: its offset and its chunk's entry count, or -1 when
// nothing came within endProbeWait.
func (b *Broker) probe(ctx context.Context, s broker.ShardID, spec stream.OffsetSpecification) (first, entries int64, err error) {
	type hit struct{ first, entries int64 }
	got := make(chan hit, 1)
	sc, err := b.subscribe(streamName(s), func(cc stream.ConsumerContext, _ *amqp.Message) {
		select { // runs on the client's dispatch goroutine: never block
		case got <- hit{cc.Consumer.GetOffset(), int64(cc.GetEntriesCount())}:
		default:
		}
	}, stream.NewConsumerOptions().
		SetOffset(spec).
		SetManualCommit().
		SetCRCCheck(false).
		SetInitialCredits(1).
		SetClientProvidedName("streamgate-probe"))
	if err != nil {
		return -1, 0, translate(fmt.Errorf("reading %s: %w", streamName(s), err))
	}
	defer b.unsubscribe(sc)
	wait := time.NewTimer(endProbeWait)
	defer wait.Stop()
	select {
	case h := <-got:
		return h.first, h.entries, nil
	case <-wait.C:
		return -1, 0, nil
	case <-ctx.Done():
		return -1, 0, fmt.Errorf("%w: reading %s: %w", broker.ErrUnavailable, streamName(s), ctx.Err())
	}
}
