package rabbitmq

import (
	"context"
	"fmt"
	"time"

	"github.com/streamgate/streamgate/broker"
)

// originOf is the subscription's origin as its saved positions tell (the
// earliest creation), or a new one, created now as spec asks.
func originOf(have map[posKey]keyState, spec broker.SubscriptionSpec) origin {
	var o origin
	for _, st := range have {
		if c := st.pos.meta.origin; st.have && c.createdMs > 0 && (o.createdMs == 0 || c.createdMs < o.createdMs) {
			o = c
		}
	}
	if o.createdMs == 0 {
		o = origin{createdMs: time.Now().UnixMilli(), earliest: spec.Start == broker.StartEarliest}
	}
	return o
}

// startOf is the position a shard without one starts at: unresolved, from
// the subscription's origin (the first message at or after its creation,
// or the first held). The offset is fixed by the first message read.
func startOf(o origin) position { return position{next: -1, meta: savedMeta{origin: o}} }

// Prepare implements broker.Subscriber. A shard without a position gets a
// start record (store.go); the first start in the log wins, so Prepares
// that run at once agree. No reader is disturbed: a start never applies
// over a position.
//
// A new subscription that starts at the latest message starts at the
// first message stamped at or after its creation (less ClockSkew): the
// stream protocol of RabbitMQ 3.10 cannot tell the end offset, and the
// server stamps each chunk when it writes it, so a message published after
// Prepare returned is read.
func (b *Broker) Prepare(ctx context.Context, spec broker.SubscriptionSpec, shards []broker.ShardID) error {
	keys := make([]posKey, len(shards))
	for i, s := range shards {
		keys[i] = posKey{spec.Name, s.Topic, s.Index}
	}
	have, err := b.store.read(ctx, keys)
	if err != nil {
		return err
	}
	var recs []record
	o := originOf(b.store.snapshot(spec.Name), spec)
	for _, k := range keys {
		if !have[k].have {
			recs = append(recs, record{kind: recStart, key: k, pos: startOf(o)})
		}
	}
	if len(recs) == 0 {
		return nil
	}
	for _, out := range b.store.write(ctx, recs) {
		if out.err != nil {
			return fmt.Errorf("saving the start of subscription %q: %w", spec.Name, out.err)
		}
	}
	return nil
}
