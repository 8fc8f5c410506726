// Poll: records fetched by franz-go become deliveries, checked against the
// partitions' phases and epochs (a record fetched before a stop or restart
// is dropped), and fetch failures, truncated logs and partitions over
// their buffer limit change the phases under consumer.mu. Poll runs on
// its caller's goroutine (the node's poller of the subscription), one call
// at a time.

package kafka

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/streamgate/streamgate/broker"
)

// Poll implements broker.Consumer.
func (c *consumer) Poll(ctx context.Context, max int) ([]broker.Delivery, error) {
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	c.mu.Lock()
	epochs := make(map[tp]uint64, len(c.parts))
	for k, ps := range c.parts {
		epochs[k] = ps.epoch
	}
	c.mu.Unlock()
	fs := c.cl.PollRecords(pctx, max)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var failed []tp
	var fetchErr error
	truncated := map[tp]int64{}
	fs.EachError(func(topic string, p int32, err error) {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return
		}
		var loss *kgo.ErrDataLoss
		if errors.As(err, &loss) {
			if loss.ResetTo <= loss.ConsumedTo {
				// The log was cut back (an unclean leader election):
				// records from ResetTo on are new ones.
				truncated[tp{topic, p}] = loss.ResetTo
			} else {
				// The log start passed a lagging subscription: franz-go
				// moved on to what still exists. Nothing to redo.
				c.log.Warn("the broker no longer has records this subscription had not read", "err", err)
			}
			return
		}
		if p >= 0 {
			failed = append(failed, tp{topic, p})
		}
		fetchErr = fmt.Errorf("fetching %s/%d: %w", topic, p, err)
	})

	out := make([]broker.Delivery, 0, fs.NumRecords())
	restart := map[tp]bool{}
	over := map[tp]bool{} // at the buffer limit: the rest of what was fetched waits in the broker
	pause := map[string][]int32{}
	remove := map[string][]int32{}
	now := time.Now()
	c.mu.Lock()
	// Records come in runs of one partition: look its state up once a run.
	var (
		lastK  tp
		lastPS *partState
	)
	fs.EachRecord(func(r *kgo.Record) {
		k := tp{r.Topic, r.Partition}
		if lastPS == nil || k != lastK {
			lastK, lastPS = k, c.parts[k]
		}
		ps := lastPS
		if ps == nil || ps.tr == nil || (ps.phase != phaseFetching && ps.phase != phasePaused) {
			return // stopped or failed since: fetched again from tr.Next() when wanted
		}
		if ps.epoch != epochs[k] {
			// Restarted while this poll ran: the record may be from before
			// the restart. Fetch the partition again from our position.
			restart[k] = true
			return
		}
		if _, cut := truncated[k]; cut {
			return // fetched again after the truncation below
		}
		if over[k] || ps.tr.Full(c.b.cfg.MaxBufferedPerShard) {
			// The shard holds its limit: drop the rest of this fetch and
			// read it again from tr.Next() once saves have drained it.
			over[k] = true
			return
		}
		if deliver, prior := ps.tr.Fetched(r.Offset); deliver {
			out = append(out, toDelivery(r, prior))
		}
		ps.fails = 0
	})
	for k, at := range truncated {
		ps := c.parts[k]
		if ps == nil || ps.tr == nil || (ps.phase != phaseFetching && ps.phase != phasePaused) {
			continue
		}
		ps.tr.Truncate(at)
		ps.unsaved = true // the saved position may lie past the new log end
		ps.seq++
		restart[k] = true
		c.eventLocked(k, broker.ShardReset, fmt.Sprintf("the log was truncated at offset %d (records from there on are new); reading again from the saved position", at))
		c.log.Warn("the log was truncated under the subscription; reading again", "topic", k.topic, "partition", k.partition, "at", at)
	}
	for k := range over {
		// Fetched again from tr.Next(), and paused below (it holds its
		// limit) until a save drains it.
		restart[k] = true
	}
	if len(restart) > 0 {
		rm := map[string][]int32{}
		add := map[string]map[int32]kgo.Offset{}
		for k := range restart {
			ps := c.parts[k]
			rm[k.topic] = append(rm[k.topic], k.partition)
			addOffset(add, k, ps.tr.Next())
			ps.to(phaseFetching)
		}
		c.removeLocked(rm)
		c.cl.AddConsumePartitions(add)
	}
	for k, ps := range c.parts {
		if ps.phase == phaseFetching && ps.tr.Full(c.b.cfg.MaxBufferedPerShard) {
			ps.pause()
			pause[k.topic] = append(pause[k.topic], k.partition)
		}
	}
	for _, k := range failed {
		ps := c.parts[k]
		if ps == nil || ps.tr == nil || (ps.phase != phaseFetching && ps.phase != phasePaused) {
			continue // stopped or failed already: not fetched, nothing to re-subscribe
		}
		ps.to(phaseFailed)
		ps.fails++
		ps.retryAt = now.Add(backoff(ps.fails))
		remove[k.topic] = append(remove[k.topic], k.partition)
	}
	if fetchErr != nil {
		c.lastErr = fetchErr
	}
	err := c.healthLocked()
	if len(pause) > 0 {
		c.cl.PauseFetchPartitions(pause)
	}
	if len(remove) > 0 {
		// Re-subscribe from where we were, after a backoff: franz-go
		// would otherwise refetch a failing partition in a tight loop.
		c.removeLocked(remove)
	}
	c.mu.Unlock()
	if len(remove) > 0 {
		c.log.Warn("fetch failed; re-subscribing after backoff", "err", fetchErr)
		signal(c.kick)
	}
	if len(truncated) > 0 {
		signal(c.commitNow)
	}
	return out, err
}

func toDelivery(r *kgo.Record, prior uint32) broker.Delivery {
	d := broker.Delivery{
		ID:          encodeID(position{topic: r.Topic, partition: r.Partition, offset: r.Offset}),
		Shard:       broker.ShardID{Topic: r.Topic, Index: r.Partition},
		Message:     broker.Message{Topic: r.Topic, Key: r.Key, Payload: r.Value},
		PublishTime: r.Timestamp,
		Attempts:    prior,
	}
	if len(r.Headers) > 0 {
		d.Message.Headers = make([]broker.Header, len(r.Headers))
		for i, h := range r.Headers {
			d.Message.Headers[i] = broker.Header{Key: h.Key, Value: h.Value}
		}
	}
	return d
}
