package kafka

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/streamgate/streamgate/broker"
)

// This file holds the consumer's slow work, run by its manage goroutine:
// loading partitions (fence, saved position), re-subscribing failed ones,
// checking that the topics are still the ones it loaded, and saving
// positions on a timer, on demand and on failure. Release, Confirm and
// Close save from their callers' goroutines, at once; a partition is in
// one save at a time (partState.saving), so the transactions of its fence
// never overlap.

// errNotStanding: the node's standing is in doubt, so nothing is saved.
var errNotStanding = errors.New("not saving: this node's membership of the cluster is in doubt")

// errSaveInFlight: what was asked is being saved by another call already.
var errSaveInFlight = errors.New("a save of these positions is in flight")

// manage owns the slow work until ctx ends.
func (c *consumer) manage(ctx context.Context) {
	tick := time.NewTicker(c.b.cfg.CommitInterval)
	defer tick.Stop()
	// Kafka expires committed offsets of a group without members
	// offsets.retention.minutes (7 days by default) after their last
	// commit; an idle shard would lose its position. Save hourly.
	refresh := time.NewTicker(time.Hour)
	defer refresh.Stop()
	topics := time.NewTicker(c.b.cfg.TopicCheckInterval)
	defer topics.Stop()
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	saveRetry := time.NewTimer(time.Hour)
	defer saveRetry.Stop()
	failures := 0
	doSave := func() {
		_, _, err := c.save(ctx, saveReq{})
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
			doSave()
			continue
		case <-c.commitNow:
			doSave()
			continue
		case <-saveRetry.C:
			doSave()
			continue
		case <-refresh.C:
			c.mu.Lock()
			c.refresh = true
			c.mu.Unlock()
			doSave()
			continue
		case <-topics.C:
			c.checkTopics(ctx)
			continue
		}
		if next := c.reconcile(ctx); !next.IsZero() {
			retry.Reset(time.Until(next))
		}
	}
}

// reconcile brings the fetched set in line with the wanted one and
// re-subscribes failed partitions whose backoff has passed. It returns when
// it wants to run again (zero: not needed).
func (c *consumer) reconcile(ctx context.Context) time.Time {
	now := time.Now()
	var load []tp
	add := map[string]map[int32]kgo.Offset{}
	var retryAt time.Time
	later := func(t time.Time) {
		if retryAt.IsZero() || t.Before(retryAt) {
			retryAt = t
		}
	}
	c.mu.Lock()
	for k := range c.want {
		ps := c.parts[k]
		switch {
		case ps == nil:
			ps = &partState{phase: phaseLoading}
			c.parts[k] = ps
			load = append(load, k)
		case ps.phase == phaseLoading && ps.tr == nil && !ps.retryAt.IsZero():
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
			ps.epoch++
			addOffset(add, k, ps.tr.next)
		case ps.phase == phaseStopped && ps.tr == nil:
			ps.phase = phaseLoading
			load = append(load, k)
		case ps.phase == phaseStopped:
			// Wanted again before it was released. What was fetched and
			// not acked may have been dropped by the node: fetch again
			// from the commit point, keeping the acks (in flight ones
			// too) and delivery counts that the tracker has.
			ps.tr.rewind()
			ps.release = false
			ps.phase = phaseFetching
			ps.epoch++
			addOffset(add, k, ps.tr.next)
		}
	}
	for _, k := range load {
		c.parts[k].retryAt = time.Time{}
		c.parts[k].loading = true
	}
	if len(add) > 0 {
		c.cl.AddConsumePartitions(add)
	}
	c.mu.Unlock()
	if len(load) > 0 {
		if t := c.load(ctx, load); !t.IsZero() {
			later(t)
		}
	}
	return retryAt
}

func addOffset(m map[string]map[int32]kgo.Offset, k tp, at int64) {
	if m[k.topic] == nil {
		m[k.topic] = map[int32]kgo.Offset{}
	}
	m[k.topic][k.partition] = kgo.NewOffset().At(at)
}

// load takes the reader fence of parts, reads their saved positions
// (choosing and saving, under the start fence, the start of those that have
// none) and starts fetching them. On failure it returns when to retry.
func (c *consumer) load(ctx context.Context, parts []tp) time.Time {
	fences, err := takeFences(ctx, c.cl, func(k tp) string { return readerID(c.group, k) }, parts)
	c.log.Debug("took fences", "partitions", parts, "err", err)
	var have map[tp]saved
	if len(fences) > 0 {
		var serr error
		have, serr = readSaved(ctx, c.adm, c.group, parts, c.log)
		var missing []tp
		for _, k := range parts {
			if _, ok := have[k]; !ok && serr == nil {
				missing = append(missing, k)
			}
		}
		if len(missing) > 0 {
			starts, ferr := takeFences(ctx, c.cl, func(k tp) string { return startID(c.group, k) }, missing)
			var settled map[tp]saved
			settled, serr = settle(ctx, c.cl, c.group, c.spec, parts, starts, c.log)
			serr = errors.Join(ferr, serr)
			if settled != nil {
				have = settled
			}
		}
		err = errors.Join(err, serr)
	}
	ids := map[string][16]byte{}
	if details, derr := c.adm.ListTopics(ctx, topicsOf(parts)...); derr == nil {
		for t, d := range details {
			if d.Err == nil {
				ids[t] = d.ID
			}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	add := map[string]map[int32]kgo.Offset{}
	var retry time.Time
	now := time.Now()
	for _, k := range parts {
		ps := c.parts[k]
		if ps == nil || ps.tr != nil || !ps.loading {
			continue // released or reloaded meanwhile
		}
		ps.loading = false
		s, ok := have[k]
		f := fences[k]
		switch {
		case ps.reload:
			// Confirm: the fence may have been taken before this node's
			// standing was in doubt. Take it again, now.
			ps.reload = false
			ps.retryAt = now
		case !ok || f == nil:
			ps.fails++
			ps.retryAt = now.Add(backoff(ps.fails))
		}
		if !ps.retryAt.IsZero() {
			if retry.IsZero() || ps.retryAt.Before(retry) {
				retry = ps.retryAt
			}
			continue
		}
		ps.tr = newTracker(s.at, s.meta)
		ps.fence = f
		ps.topicID = ids[k.topic]
		ps.fails, ps.retryAt = 0, time.Time{}
		if !c.want[k] {
			ps.phase = phaseStopped // unassigned while loading
			continue
		}
		ps.phase = phaseFetching
		ps.epoch++
		addOffset(add, k, s.at)
	}
	if err != nil {
		c.lastErr = err
		c.log.Warn("loading saved positions failed; retrying", "err", err)
	}
	if len(add) > 0 {
		c.cl.AddConsumePartitions(add)
	}
	return retry
}

// saveReq says which partitions a save covers.
type saveReq struct {
	only  map[tp]bool // nil: every partition that has something to save
	force bool        // save even unchanged positions (to test the fence)
}

// save saves the position of every partition the request covers that has
// changed, each in a fenced transaction of its own, so that one failing
// partition holds no other. It returns the partitions saved and those
// whose fence another reader has taken (forgotten now; ShardLost is
// reported for them unless the request is forced or they were being
// released), with the first other error.
func (c *consumer) save(ctx context.Context, req saveReq) (savedParts, lost []tp, err error) {
	type job struct {
		k       tp
		f       *fence
		at      int64
		meta    string
		acks    int
		seq     uint64
		release bool
		err     error
	}
	if c.spec.Standing != nil && !c.spec.Standing() {
		return nil, nil, errNotStanding
	}
	var jobs []*job
	skipped := false
	c.mu.Lock()
	refresh := c.refresh && req.only == nil
	for k, ps := range c.parts {
		if (req.only != nil && !req.only[k]) || ps.tr == nil || ps.fence == nil {
			continue
		}
		if !req.force && !ps.unsaved && !ps.tr.dirty() && !ps.release && !refresh {
			continue
		}
		if ps.saving {
			skipped = true // another save of it is in flight: one transaction at a time
			continue
		}
		ps.saving = true
		at, meta := ps.tr.saved()
		jobs = append(jobs, &job{k: k, f: ps.fence, at: at, meta: encodeMeta(at, meta), acks: ps.tr.acks, seq: ps.seq, release: ps.release})
	}
	c.mu.Unlock()
	if len(jobs) == 0 {
		if skipped {
			return nil, nil, errSaveInFlight
		}
		return nil, nil, nil
	}
	byKey := make(map[tp]*job, len(jobs))
	keys := make([]tp, len(jobs))
	for i, j := range jobs {
		byKey[j.k], keys[i] = j, j.k
	}
	parallel(keys, func(k tp) {
		j := byKey[k]
		j.err = fencedCommit(ctx, c.cl, c.group, j.f, j.k, j.at, j.meta)
	})

	resume := map[string][]int32{}
	c.mu.Lock()
	defer c.mu.Unlock()
	total, failed := 0, skipped
	for _, j := range jobs {
		ps := c.parts[j.k]
		if ps != nil {
			ps.saving = false
		}
		if ps == nil || ps.fence != j.f {
			continue // forgotten or loaded again meanwhile
		}
		switch {
		case errors.Is(j.err, errFenced):
			lost = append(lost, j.k)
			c.forgetLocked(j.k)
			if !req.force && !j.release {
				c.eventLocked(j.k, broker.ShardLost, "another node reads this shard now")
			}
			c.log.Warn("another reader has taken the shard; forgetting it", "topic", j.k.topic, "partition", j.k.partition)
			continue
		case j.err != nil:
			failed = true
			if err == nil {
				err = fmt.Errorf("saving %s/%d of %q: %w", j.k.topic, j.k.partition, c.group, j.err)
			}
			continue
		}
		savedParts = append(savedParts, j.k)
		ps.tr.committedAt(j.at, j.acks)
		ps.unsaved = false
		total += j.acks
		if ps.phase == phaseStopped && ps.release && ps.seq == j.seq {
			delete(c.parts, j.k) // every ack applied before Release is in this save
			continue
		}
		if ps.phase == phasePaused && ps.tr.uncommitted() <= int64(c.b.cfg.MaxBufferedPerShard/2) {
			ps.phase = phaseFetching
			resume[j.k.topic] = append(resume[j.k.topic], j.k.partition)
		}
	}
	if refresh && !failed {
		c.refresh = false // only a save that included every position clears it
	}
	c.acks = max(c.acks-total, 0)
	if len(resume) > 0 {
		c.cl.ResumeFetchPartitions(resume)
	}
	return savedParts, lost, err
}

// Release implements broker.Consumer.
func (c *consumer) Release(ctx context.Context, shards []broker.ShardID) error {
	only := map[tp]bool{}
	c.mu.Lock()
	for _, s := range shards {
		k := tp{s.Topic, s.Index}
		ps := c.parts[k]
		switch {
		case ps == nil:
		case c.want[k] || ps.phase != phaseStopped:
			c.mu.Unlock()
			return fmt.Errorf("kafka: release %s/%d: it is assigned", k.topic, k.partition)
		case ps.tr == nil: // never loaded: nothing to save
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
				delete(only, k) // saved with every ack, or taken by another reader
			}
		}
		c.mu.Unlock()
		if len(only) == 0 {
			return nil
		}
		if err == nil {
			continue // acks arrived after the snapshot: save again
		}
		wait := backoff(attempt)
		if errors.Is(err, errSaveInFlight) {
			wait, attempt = 5*time.Millisecond, attempt-1 // another call is saving them
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafka: release: %w", err)
		case <-time.After(wait):
		}
	}
	return nil
}

// Confirm implements broker.Consumer.
func (c *consumer) Confirm(ctx context.Context, shards []broker.ShardID) ([]broker.ShardID, error) {
	only := map[tp]bool{}
	c.mu.Lock()
	for _, s := range shards {
		k := tp{s.Topic, s.Index}
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
			lost = append(lost, k.shard())
		}
		c.mu.Lock()
		for k := range only {
			if c.parts[k] == nil {
				delete(only, k) // released meanwhile
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
			return lost, fmt.Errorf("kafka: confirm: %w", errors.Join(err, ctx.Err()))
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
	c.wg.Wait()
	defer func() {
		c.b.mu.Lock()
		delete(c.b.consumers, c)
		c.b.mu.Unlock()
		c.cl.Close()
	}()
	for {
		if c.b.isAborted() {
			return nil
		}
		_, _, err := c.save(ctx, saveReq{})
		switch {
		case err == nil:
			return nil
		case errors.Is(err, errNotStanding):
			// Another node may be taking the shards over: what this one
			// holds in memory may be stale. Whoever reads them next starts
			// from the last save.
			c.log.Warn("closing without a final save", "err", err)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafka: final save of %q: %w", c.spec.Name, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// backoff grows from 100ms to 5s.
func backoff(attempt int) time.Duration {
	d := 100 * time.Millisecond
	for i := 1; i < attempt && d < 5*time.Second; i++ {
		d *= 2
	}
	return min(d, 5*time.Second)
}
