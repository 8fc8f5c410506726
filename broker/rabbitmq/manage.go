package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rabbitmq/rabbitmq-stream-go-client/pkg/amqp"
	"github.com/rabbitmq/rabbitmq-stream-go-client/pkg/stream"

	"github.com/streamgate/streamgate/broker"
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
	for k := range c.want {
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
		if ps.phase == phaseFetching && ps.sc == nil && !ps.subscribing && ps.tr != nil {
			ps.subscribing = true
			subs = append(subs, sub{k, ps.gen, c.offsetSpecLocked(ps)})
		}
	}
	orphans := c.orphans
	c.orphans = nil
	c.mu.Unlock()

	for _, sc := range orphans {
		_ = sc.Close()
	}
	if len(load) > 0 {
		if t := c.load(ctx, load); !t.IsZero() {
			later(t)
		}
		signal(c.kick) // subscribe what was loaded
	}
	for _, s := range subs {
		if t := c.subscribe(s.k, s.gen, s.spec); !t.IsZero() {
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
		return stream.OffsetSpecification{}.Offset(ps.tr.next)
	case ps.origin.earliest || ps.origin.createdMs == 0:
		return stream.OffsetSpecification{}.First()
	default:
		return stream.OffsetSpecification{}.Timestamp(ps.origin.createdMs - c.b.cfg.ClockSkew.Milliseconds())
	}
}

// subscribe opens the stream subscription of one shard's generation gen.
func (c *consumer) subscribe(k posKey, gen uint64, spec stream.OffsetSpecification) time.Time {
	handler := func(cc stream.ConsumerContext, m *amqp.Message) {
		c.handle(k, gen, cc.Consumer.GetOffset(), m)
	}
	sc, err := c.b.env.NewConsumer(streamName(shardOf(k)), handler, stream.NewConsumerOptions().
		SetOffset(spec).
		SetManualCommit().
		SetCRCCheck(false).
		SetInitialCredits(2). // chunks in flight per shard, besides MaxBufferedPerShard
		SetClientProvidedName("streamgate-"+c.spec.Name))
	c.mu.Lock()
	defer c.mu.Unlock()
	ps := c.parts[k]
	if ps != nil && ps.gen == gen {
		ps.subscribing = false
	}
	if err != nil {
		if ps == nil || ps.gen != gen {
			return time.Time{}
		}
		ps.phase = phaseFailed
		ps.gen++
		ps.fails++
		ps.retryAt = time.Now().Add(backoff(ps.fails))
		c.lastErr = translate(fmt.Errorf("subscribing to %s: %w", streamName(shardOf(k)), err))
		c.log.Warn("subscribing failed; retrying", "stream", streamName(shardOf(k)), "err", err)
		return ps.retryAt
	}
	if ps == nil || ps.gen != gen || ps.phase != phaseFetching {
		c.orphans = append(c.orphans, sc)
		signal(c.kick)
		return time.Time{}
	}
	ps.sc, ps.scGen, ps.fails = sc, gen, 0
	closed := sc.NotifyClose()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		ev := <-closed
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
	return time.Time{}
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
	for i, o := range outs {
		if o.err == nil && !o.state.have {
			starts = append(starts, record{kind: recStart, key: keys[i], pos: startOf(originOf(c.b.store.snapshot(c.spec.Name), c.spec))})
			startKeys = append(startKeys, i)
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
		ps.origin = pos.meta.origin
		ps.resolved = pos.next >= 0
		ps.tr = newTracker(max(pos.next, 0), pos.meta)
		ps.fails = 0
		ps.gen++
		if !c.want[k] {
			ps.phase = phaseStopped
			continue
		}
		ps.phase = phaseFetching
	}
	return retry
}

// saveReq says which shards a save covers.
type saveReq struct {
	only  map[posKey]bool // nil: every shard with something to save
	force bool            // save even unchanged positions (to test the fence)
}

// save writes the position of every shard the request covers that changed,
// under its claim. It returns the shards saved and those another reader
// claimed (forgotten now; ShardLost reported unless forced or released).
func (c *consumer) save(ctx context.Context, req saveReq) (saved, lost []posKey, err error) {
	if c.b.aborted.Load() {
		return nil, nil, errAborted
	}
	if c.spec.Standing != nil && !c.spec.Standing() {
		return nil, nil, errNotStanding
	}
	type job struct {
		k       posKey
		holder  string
		at      int64
		acks    int
		seq     uint64
		release bool
	}
	var jobs []job
	var recs []record
	skipped := false
	c.mu.Lock()
	for k, ps := range c.parts {
		if ps.tr == nil || (req.only != nil && !req.only[k]) {
			continue
		}
		if !req.force && !ps.unsaved && !ps.tr.dirty() && !ps.release && ps.seq == ps.savedSeq {
			continue
		}
		if ps.saving {
			skipped = true
			continue
		}
		ps.saving = true
		ps.n++
		pos := startOf(ps.origin)
		at := int64(-1)
		if ps.resolved {
			var meta savedMeta
			at, meta = ps.tr.saved()
			pos = position{next: at, meta: meta}
		}
		jobs = append(jobs, job{k: k, holder: ps.holder, at: at, acks: ps.tr.acks, seq: ps.seq, release: ps.release})
		recs = append(recs, record{kind: recSave, key: k, holder: ps.holder, n: ps.n, pos: pos})
	}
	c.mu.Unlock()
	if len(jobs) == 0 {
		if skipped {
			return nil, nil, errSaveInFlight
		}
		return nil, nil, nil
	}
	outs := c.b.store.write(ctx, recs)

	c.mu.Lock()
	defer c.mu.Unlock()
	total, failed := 0, skipped
	for i, j := range jobs {
		o := outs[i]
		ps := c.parts[j.k]
		if ps != nil {
			ps.saving = false
		}
		if ps == nil || ps.holder != j.holder {
			continue
		}
		switch {
		case o.err != nil:
			failed = true
			if err == nil {
				err = fmt.Errorf("saving %s of %q: %w", streamName(shardOf(j.k)), c.spec.Name, o.err)
			}
			continue
		case !o.valid && o.state.holder != j.holder:
			lost = append(lost, j.k)
			c.forgetLocked(j.k)
			if !req.force && !j.release {
				c.eventLocked(j.k, broker.ShardLost, "another node reads this shard now")
			}
			c.log.Warn("another reader has taken the shard; forgetting it", "stream", streamName(shardOf(j.k)))
			continue
		case !o.valid:
			failed = true // superseded by a save of ours from before: save again
			ps.n = max(ps.n, o.state.n)
			continue
		}
		saved = append(saved, j.k)
		if j.at >= 0 {
			ps.tr.committedAt(j.at, j.acks)
		}
		ps.unsaved = false
		ps.savedSeq = j.seq
		total += j.acks
		if ps.phase == phaseStopped && ps.release && ps.seq == j.seq {
			delete(c.parts, j.k)
			continue
		}
		if ps.phase == phasePaused && ps.tr.uncommitted() <= int64(c.b.cfg.MaxBufferedPerShard/2) {
			ps.phase = phaseFetching
			ps.gen++
			signal(c.kick)
		}
	}
	_ = failed
	c.acks = max(c.acks-total, 0)
	return saved, lost, err
}

// Release implements broker.Consumer.
func (c *consumer) Release(ctx context.Context, shards []broker.ShardID) error {
	only := map[posKey]bool{}
	c.mu.Lock()
	for _, s := range shards {
		k := c.key(s)
		ps := c.parts[k]
		switch {
		case ps == nil:
		case c.want[k] || ps.phase != phaseStopped:
			c.mu.Unlock()
			return fmt.Errorf("rabbitmq: release %s: it is assigned", streamName(s))
		case ps.tr == nil:
			delete(c.parts, k)
		default:
			ps.release = true
			only[k] = true
		}
	}
	c.mu.Unlock()
	for attempt := 1; len(only) > 0; attempt++ {
		_, _, err := c.save(ctx, saveReq{only: only})
		c.mu.Lock()
		for k := range only {
			if ps := c.parts[k]; ps == nil || !ps.release {
				delete(only, k)
			}
		}
		c.mu.Unlock()
		if len(only) == 0 {
			return nil
		}
		if err == nil {
			continue
		}
		wait := backoff(attempt)
		if errors.Is(err, errSaveInFlight) {
			wait, attempt = 5*time.Millisecond, attempt-1
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("rabbitmq: release: %w", err)
		case <-time.After(wait):
		}
	}
	return nil
}

// Confirm implements broker.Consumer.
func (c *consumer) Confirm(ctx context.Context, shards []broker.ShardID) ([]broker.ShardID, error) {
	only := map[posKey]bool{}
	c.mu.Lock()
	for _, s := range shards {
		k := c.key(s)
		switch ps := c.parts[k]; {
		case ps == nil:
		case ps.tr == nil:
			ps.reload = ps.loading
		default:
			only[k] = true
		}
	}
	c.mu.Unlock()
	var lost []broker.ShardID
	for attempt := 1; len(only) > 0; attempt++ {
		done, gone, err := c.save(ctx, saveReq{only: only, force: true})
		for _, k := range done {
			delete(only, k)
		}
		for _, k := range gone {
			delete(only, k)
			lost = append(lost, shardOf(k))
		}
		c.mu.Lock()
		for k := range only {
			if c.parts[k] == nil {
				delete(only, k)
			}
		}
		c.mu.Unlock()
		if len(only) == 0 {
			break
		}
		wait := backoff(attempt)
		if errors.Is(err, errSaveInFlight) {
			wait, attempt = 5*time.Millisecond, attempt-1
		}
		select {
		case <-ctx.Done():
			return lost, fmt.Errorf("rabbitmq: confirm: %w", errors.Join(err, ctx.Err()))
		case <-time.After(wait):
		}
	}
	return lost, nil
}

// Close implements broker.Consumer.
func (c *consumer) Close(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	defer func() {
		c.mu.Lock()
		var scs []*stream.Consumer
		for _, ps := range c.parts {
			if ps.sc != nil {
				scs = append(scs, ps.sc)
				ps.sc = nil
			}
			ps.gen++
		}
		scs = append(scs, c.orphans...)
		c.orphans = nil
		c.mu.Unlock()
		for _, sc := range scs {
			_ = sc.Close()
		}
		c.wg.Wait()
		c.b.mu.Lock()
		delete(c.b.consumers, c)
		c.b.mu.Unlock()
	}()
	for {
		_, _, err := c.save(ctx, saveReq{})
		switch {
		case err == nil:
			return nil
		case errors.Is(err, errNotStanding):
			c.log.Warn("closing without a final save", "err", err)
			return nil
		case errors.Is(err, errAborted):
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("rabbitmq: final save of %q: %w", c.spec.Name, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
