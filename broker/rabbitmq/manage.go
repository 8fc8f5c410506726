package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rabbitmq/rabbitmq-stream-go-client/pkg/amqp"
	"github.com/rabbitmq/rabbitmq-stream-go-client/pkg/stream"
	"github.com/streamgate/streamgate/broker/cursor"
)

// manage owns the consumer's slow work until ctx ends: loading shards,
// opening and closing stream subscriptions, and saving on a timer, on
// demand and on failure.
func (c *consumer) manage(ctx context.Context) {
	tick := time.NewTicker(c.b.cfg.SaveInterval)
	defer tick.Stop()
	refresh := time.NewTicker(time.Hour) // keeps idle positions inside the store's retention
	defer refresh.Stop()
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	saveRetry := time.NewTimer(time.Hour)
	defer saveRetry.Stop()
	failures := 0
	doSave := func(force bool) {
		_, _, err := c.save(ctx, saveReq{force: force})
		switch {
		case err == nil || ctx.Err() != nil:
			failures = 0
		case errors.Is(err, errNotStanding), errors.Is(err, errSaveInFlight):
			saveRetry.Reset(100 * time.Millisecond)
		default:
			failures++
			c.log.Warn("saving positions failed; retrying", "err", err, "attempt", failures)
			saveRetry.Reset(backoff(failures))
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
		case <-retry.C:
		case <-tick.C:
			doSave(false)
		case <-c.commitNow:
			doSave(false)
		case <-saveRetry.C:
			doSave(false)
		case <-refresh.C:
			doSave(true)
		}
		if next := c.reconcile(ctx); !next.IsZero() {
			retry.Reset(time.Until(next))
		}
	}
}

// reconcile loads wanted shards, subscribes the shards to read, closes the
// subscriptions no longer read, and says when it wants to run again.
func (c *consumer) reconcile(ctx context.Context) time.Time {
	now := time.Now()
	var retryAt time.Time
	later := func(t time.Time) {
		if retryAt.IsZero() || t.Before(retryAt) {
			retryAt = t
		}
	}
	var load []posKey
	type sub struct {
		k    posKey
		gen  uint64
		spec stream.OffsetSpecification
	}
	var subs []sub
	c.mu.Lock()
	for k := range c.assigned {
		ps := c.parts[k]
		switch {
		case ps == nil:
			ps = &shardState{phase: phaseLoading}
			c.parts[k] = ps
			load = append(load, k)
		case ps.phase == phaseLoading && ps.tr == nil && !ps.loading:
			if now.Before(ps.retryAt) {
				later(ps.retryAt)
				continue
			}
			load = append(load, k)
		case ps.phase == phaseFailed:
			if now.Before(ps.retryAt) {
				later(ps.retryAt)
				continue
			}
			ps.phase = phaseFetching
			ps.gen++
		case ps.phase == phaseStopped && ps.tr == nil:
			ps.phase = phaseLoading
			load = append(load, k)
		case ps.phase == phaseStopped:
			// Wanted again before it was released: read again from the
			// position, keeping the acks and delivery counts.
			ps.release = false
			ps.phase = phaseFetching
			c.stopReadingLocked(ps)
		}
	}
	for _, k := range load {
		c.parts[k].loading = true
		c.parts[k].retryAt = time.Time{}
	}
	for k, ps := range c.parts {
		if ps.phase == phasePaused && ps.tr.Drained(c.b.cfg.MaxBufferedPerShard) {
			ps.phase = phaseFetching
			ps.gen++
		}
		if ps.phase == phaseFetching && ps.sc == nil && !ps.subscribing && ps.tr != nil {
			ps.subscribing = true
			subs = append(subs, sub{k, ps.gen, c.offsetSpecLocked(ps)})
		}
	}
	orphans := c.orphans
	c.orphans = nil
	c.mu.Unlock()

	for _, sc := range orphans {
		c.b.unsubscribe(sc)
	}
	if len(load) > 0 {
		if t := c.load(ctx, load); !t.IsZero() {
			later(t)
		}
		signal(c.kick) // subscribe what was loaded
	}
	for _, s := range subs {
		if t := c.subscribe(ctx, s.k, s.gen, s.spec); !t.IsZero() {
			later(t)
		}
	}
	return retryAt
}

// offsetSpecLocked is where a shard's subscription starts: after the last
// message taken, or at the origin while nothing was read.
func (c *consumer) offsetSpecLocked(ps *shardState) stream.OffsetSpecification {
	switch {
	case ps.resolved:
		return stream.OffsetSpecification{}.Offset(ps.tr.Next())
	case ps.origin.Earliest || ps.origin.CreatedMs == 0:
		return stream.OffsetSpecification{}.First()
	default:
		return stream.OffsetSpecification{}.Timestamp(ps.origin.CreatedMs - c.b.cfg.ClockSkew.Milliseconds())
	}
}

// subscribe opens the stream subscription of one shard's generation gen.
// Its close watcher ends with ctx (Close cancels it), so that Close never
// waits on a close notification the client may not send.
func (c *consumer) subscribe(ctx context.Context, k posKey, gen uint64, spec stream.OffsetSpecification) time.Time {
	handler := func(cc stream.ConsumerContext, m *amqp.Message) {
		c.handle(k, gen, cc.Consumer.GetOffset(), m)
	}
	sc, err := c.b.subscribe(streamName(shardOf(k)), handler, stream.NewConsumerOptions().
		SetOffset(spec).
		SetManualCommit().
		SetCRCCheck(false).
		SetInitialCredits(2). // chunks in flight per shard, besides MaxBufferedPerShard
		SetClientProvidedName("streamgate-"+c.spec.Name))
	retry, keep := c.adopt(ctx, k, gen, sc, err)
	if err == nil && !keep {
		c.b.unsubscribe(sc) // stale, or the consumer is closing: Close has collected what to close already
	}
	return retry
}

// adopt takes a new subscription as the shard's, or says it is not wanted
// (another generation now, or the consumer is closed).
func (c *consumer) adopt(ctx context.Context, k posKey, gen uint64, sc *stream.Consumer, err error) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ps := c.parts[k]
	if ps != nil && ps.gen == gen {
		ps.subscribing = false
	}
	if err != nil {
		if ps == nil || ps.gen != gen {
			return time.Time{}, false
		}
		ps.phase = phaseFailed
		ps.gen++
		ps.fails++
		ps.retryAt = time.Now().Add(backoff(ps.fails))
		c.lastErr = translate(fmt.Errorf("subscribing to %s: %w", streamName(shardOf(k)), err))
		c.log.Warn("subscribing failed; retrying", "stream", streamName(shardOf(k)), "err", err)
		return ps.retryAt, false
	}
	if c.closed || ps == nil || ps.gen != gen || ps.phase != phaseFetching {
		signal(c.kick)
		return time.Time{}, false
	}
	ps.sc, ps.scGen, ps.fails = sc, gen, 0
	closed := sc.NotifyClose()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		var ev stream.Event
		select {
		case ev = <-closed:
		case <-ctx.Done():
			c.b.unsubscribe(sc) // Close closes it too: whichever is first
			return
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		ps := c.parts[k]
		if ps == nil || ps.sc != sc {
			return // closed by us
		}
		ps.sc = nil
		ps.phase = phaseFailed
		c.stopReadingLocked(ps)
		ps.fails++
		ps.retryAt = time.Now().Add(backoff(ps.fails))
		c.lastErr = fmt.Errorf("the subscription to %s ended: %s %v", streamName(shardOf(k)), ev.Reason, ev.Err)
		c.log.Warn("stream subscription lost; subscribing again after backoff", "stream", streamName(shardOf(k)), "reason", ev.Reason)
		signal(c.kick)
	}()
	return time.Time{}, true
}

// load claims the fence of each shard and reads the position as of the
// claim (writing the start when it has none).
func (c *consumer) load(ctx context.Context, keys []posKey) time.Time {
	recs := make([]record, len(keys))
	for i, k := range keys {
		recs[i] = record{kind: recClaim, key: k}
	}
	outs := c.b.store.write(ctx, recs)
	var starts []record
	var startKeys []int
	var missing []posKey
	for i, o := range outs {
		if o.err == nil && !o.state.have {
			missing = append(missing, keys[i])
			startKeys = append(startKeys, i)
		}
	}
	if len(missing) > 0 {
		// Not prepared (or its start was lost): chosen as Prepare would.
		pos, err := c.b.starts(ctx, c.spec, missing)
		for j, k := range missing {
			if err != nil {
				outs[startKeys[j]].err = err
				continue
			}
			starts = append(starts, record{kind: recStart, key: k, pos: pos[j]})
		}
		if err != nil {
			starts, startKeys = nil, nil
		}
	}
	if len(starts) > 0 {
		for j, so := range c.b.store.write(ctx, starts) {
			i := startKeys[j]
			if so.err != nil {
				outs[i].err = so.err
				continue
			}
			// The claim stays ours unless another came after it.
			if so.state.holder != outs[i].state.holder {
				outs[i].err = errFenced
				continue
			}
			outs[i].state = so.state
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var retry time.Time
	now := time.Now()
	for i, k := range keys {
		ps := c.parts[k]
		if ps == nil || ps.tr != nil || !ps.loading {
			continue
		}
		ps.loading = false
		o := outs[i]
		switch {
		case ps.reload:
			ps.reload = false
			ps.retryAt = now
		case o.err != nil:
			ps.fails++
			ps.retryAt = now.Add(backoff(ps.fails))
			c.lastErr = o.err
		}
		if !ps.retryAt.IsZero() {
			if retry.IsZero() || ps.retryAt.Before(retry) {
				retry = ps.retryAt
			}
			continue
		}
		pos := o.state.pos
		ps.holder, ps.n = o.state.holder, 0
		ps.origin = pos.meta.Origin
		ps.resolved = pos.next >= 0
		ps.tr = cursor.NewTracker(max(pos.next, 0), pos.meta)
		ps.fails = 0
		ps.gen++
		if !c.assigned[k] {
			ps.phase = phaseStopped
			continue
		}
		ps.phase = phaseFetching
	}
	return retry
}

// signal wakes a capacity-1 channel's reader without blocking.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// backoff is the backends' shared retry wait.
var backoff = cursor.Backoff
