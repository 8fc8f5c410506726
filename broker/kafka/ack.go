// What the node tells the consumer about messages and shards (Ack,
// Delivered, Abandon), and what the consumer tells the node (shard events:
// Events, TakeEvents). They may be called from any goroutine; they take
// consumer.mu and never wait for the broker. eventLocked is called with mu
// held by whichever goroutine noticed the event (Poll, manage, a save).

package kafka

import "github.com/streamgate/streamgate/broker"

// Ack implements broker.Consumer.
func (c *consumer) Ack(ids ...string) {
	commit := false
	c.mu.Lock()
	for _, id := range ids {
		p, err := decodeIDIn(id, c.topics)
		if err != nil {
			continue
		}
		ps := c.parts[tp{p.topic, p.partition}]
		if ps == nil || ps.tr == nil || !ps.tr.Ack(p.offset) {
			continue
		}
		ps.seq++
		c.acks++
		if c.acks >= c.b.cfg.CommitEvery {
			commit = true
		}
		// A paused partition resumes only after a save: save as soon as
		// acks have drained it to half, not at the next tick.
		if ps.phase == phasePaused {
			if o, _ := ps.tr.SavePoint(); ps.tr.Next()-o <= int64(c.b.cfg.MaxBufferedPerShard/2) {
				commit = true
			}
		}
	}
	c.mu.Unlock()
	if commit {
		signal(c.commitNow)
	}
}

// Delivered implements broker.Consumer.
func (c *consumer) Delivered(ids ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		p, err := decodeIDIn(id, c.topics)
		if err != nil {
			continue
		}
		if ps := c.parts[tp{p.topic, p.partition}]; ps != nil && ps.tr != nil && ps.tr.Delivered(p.offset) {
			ps.seq++
		}
	}
}

// Abandon implements broker.Consumer.
func (c *consumer) Abandon(shards []broker.ShardID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range shards {
		k := tp{s.Topic, s.Index}
		c.forgetLocked(k)
		delete(c.events, k)
	}
	c.savedLocked() // a SaveAcks waiting for these shards' saves: they are void now
}

// eventLocked records an event for the node, replacing an older one of
// the same partition.
func (c *consumer) eventLocked(k tp, kind broker.ShardEventKind, reason string) {
	c.events[k] = broker.ShardEvent{Shard: k.shard(), Kind: kind, Reason: reason}
	signal(c.eventSig)
	c.savedLocked() // a SaveAcks waiting for the shard: lost or reset, its acks are void
}

// Events implements broker.Consumer.
func (c *consumer) Events() <-chan struct{} { return c.eventSig }

// TakeEvents implements broker.Consumer.
func (c *consumer) TakeEvents() []broker.ShardEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]broker.ShardEvent, 0, len(c.events))
	for _, ev := range c.events {
		out = append(out, ev)
	}
	clear(c.events)
	return out
}
