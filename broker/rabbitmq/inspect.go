package rabbitmq

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/rabbitmq/rabbitmq-stream-go-client/pkg/stream"

	"github.com/streamgate/streamgate/broker"
)

var _ broker.Inspector = (*Broker)(nil)

// Inspect implements broker.Inspector: the saved positions as of a sync
// record read back (store.go), and each shard's end read by a short
// subscription at its last chunk (endOffset); an unresolved start (nothing
// read yet) counts from the first message at its origin, read the same
// way. It runs on the caller's goroutine, a probe per shard at once; each
// probe waits up to endProbeWait when its shard is empty.
func (b *Broker) Inspect(ctx context.Context, subscription string, topics []string) ([]broker.ShardProgress, error) {
	var keys []posKey
	if len(topics) == 0 {
		for k := range b.store.snapshot(subscription) {
			keys = append(keys, k)
		}
	} else {
		shards, err := b.Shards(ctx, topics)
		if err != nil {
			return nil, err
		}
		for _, s := range shards {
			keys = append(keys, posKey{subscription, s.Topic, s.Index})
		}
	}
	have, err := b.store.read(ctx, keys)
	if err != nil {
		return nil, err
	}
	out := make([]broker.ShardProgress, len(keys))
	errs := make([]error, len(keys))
	var wg sync.WaitGroup
	for i, k := range keys {
		st := have[k]
		out[i] = broker.ShardProgress{Shard: shardOf(k), Saved: st.have, Backlog: -1}
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i].Backlog, errs[i] = b.backlog(ctx, shardOf(k), st)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if errors.Is(err, broker.ErrTopicNotFound) {
			out[i].Backlog, errs[i] = -1, nil // deleted since: the backend cannot tell
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b broker.ShardProgress) int {
		return cmp.Or(cmp.Compare(a.Shard.Topic, b.Shard.Topic), cmp.Compare(a.Shard.Index, b.Shard.Index))
	})
	return out, nil
}

// backlog counts the messages of a shard that st does not mark acked.
func (b *Broker) backlog(ctx context.Context, s broker.ShardID, st keyState) (int64, error) {
	end, err := b.endOffset(ctx, s)
	if err != nil || end < 0 {
		return 0, err // empty
	}
	from := st.pos.next
	if !st.have || from < 0 {
		o := st.pos.meta.Origin
		spec := stream.OffsetSpecification{}.First()
		if st.have && !o.Earliest && o.CreatedMs > 0 {
			spec = stream.OffsetSpecification{}.Timestamp(o.CreatedMs - b.cfg.ClockSkew.Milliseconds())
		}
		first, _, err := b.probe(ctx, s, spec)
		if err != nil || first < 0 {
			return 0, err
		}
		from = first
	}
	n := max(end-from, 0)
	if st.have {
		for _, o := range st.pos.meta.Acked {
			if o >= from && o < end {
				n--
			}
		}
	}
	return max(n, 0), nil
}

// Unsaved implements broker.Inspector: the acks this process's consumers
// of subscription hold that no save has included yet. Memory only.
func (b *Broker) Unsaved(subscription string) map[broker.ShardID]int64 {
	b.mu.Lock()
	var cs []*consumer
	for c := range b.consumers {
		if c.spec.Name == subscription {
			cs = append(cs, c)
		}
	}
	b.mu.Unlock()
	out := map[broker.ShardID]int64{}
	for _, c := range cs {
		c.mu.Lock()
		for k, ps := range c.parts {
			if ps.tr != nil && ps.tr.Acks() > 0 {
				out[shardOf(k)] += int64(ps.tr.Acks())
			}
		}
		c.mu.Unlock()
	}
	return out
}
