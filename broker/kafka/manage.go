// The consumer's slow work, run by its manage goroutine (started by
// Consume, stopped by Close): loading partitions (fence, saved position),
// re-subscribing failed ones after a backoff, checking that the topics are
// still the ones it loaded (topics.go), and saving positions on a timer,
// on demand (commitNow) and again after a failure.

package kafka

import (
	"context"
	"errors"
	"time"

	"github.com/streamgate/streamgate/broker/cursor"
	"github.com/twmb/franz-go/pkg/kgo"
)

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
	for k := range c.assigned {
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
			ps.to(phaseFetching)
			addOffset(add, k, ps.tr.Next())
		case ps.phase == phaseStopped && ps.tr == nil:
			ps.to(phaseLoading)
			load = append(load, k)
		case ps.phase == phaseStopped:
			// Wanted again before it was released. What was fetched and
			// not acked may have been dropped by the node: fetch again
			// from the commit point, keeping the acks (in flight ones
			// too) and delivery counts that the tracker has.
			ps.tr.Rewind()
			ps.release = false
			ps.to(phaseFetching)
			addOffset(add, k, ps.tr.Next())
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
		ps.tr = cursor.NewTracker(s.at, s.meta)
		ps.fence = f
		ps.topicID = ids[k.topic]
		ps.fails, ps.retryAt = 0, time.Time{}
		if !c.assigned[k] {
			ps.to(phaseStopped) // unassigned while loading
			continue
		}
		ps.to(phaseFetching)
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
