// Handoff: which subscriber reads each shard (the ring over every
// subscriber of the cluster), the claims this node gossips to match, and
// the release of a shard that moved away: once none of its messages is in
// flight, its position is saved and its claim dropped, so that the new
// owner's node may claim it (ownership.go says when a node may claim).
// Everything here runs on the subscription's goroutine (run,
// dispatcher.go), but for the Release call, which runs on a goroutine of
// its own counted by releases and given up when the consumer closes.

package node

import (
	"cmp"
	"slices"
	"time"

	"github.com/streamgate/streamgate/broker"
	"github.com/streamgate/streamgate/cluster"
)

// recomputeSpacing: after joins or leaves, recomputeStale waits this many
// times as long as the last recompute took, so that recomputing for them
// takes at most a fifth of run's time however fast subscribers come and
// go.
const recomputeSpacing = 4

// recomputeStale recomputes after sessions joined or left (add and remove
// only mark the assignment stale), as soon as recomputeSpacing allows.
// Joins and leaves in the meantime are one recompute: every recompute
// walks every subscriber of the subscription, so one per join made
// opening N streams cost O(N^2) (issue 10: 10.8 s for 1,000 streams).
// A join after a quiet spell is recomputed at once; in a burst, a
// subscriber waits for its shards at most recomputeSpacing times one
// recompute (about 2 ms at 1,000 subscribers).
//
// While the assignment is stale run does not dispatch: owner may name a
// session that left, or miss one that joined. Everything else runs with
// the last recompute's owners, as it would have had the joins and leaves
// come after it: a message fetched or handed back for a shard that moves
// is queued or dropped, and the recompute then keeps or releases the
// shard as it does for any move.
func (s *subscription) recomputeStale(now time.Time) {
	if wait := s.recomputeAt.Sub(now); wait > 0 {
		if s.due == nil {
			if s.dueTimer == nil {
				s.dueTimer = time.NewTimer(wait)
			} else {
				s.dueTimer.Reset(wait)
			}
			s.due = s.dueTimer.C
		}
		return
	}
	s.recompute()
}

// stopDue disarms recomputeStale's timer.
func (s *subscription) stopDue() {
	if s.due != nil {
		s.dueTimer.Stop()
		s.due = nil
	}
}

// recompute derives the assignment from the ring over every subscriber
// (local and remote), then claims, fetches and releases shards to match.
// Messages in flight stay with their holder: a shard's new owner gets
// nothing of it until the holder has acked them or left (dispatch checks
// the holder; another node waits for the claim to go).
func (s *subscription) recompute() {
	start := time.Now()
	defer func() {
		end := time.Now()
		s.recomputeAt = end.Add(recomputeSpacing * end.Sub(start))
	}()
	s.stale = false
	s.stopDue()
	ids := make([]string, 0, len(s.sessions)+len(s.remote.subs))
	if !s.draining.Load() {
		for id := range s.sessions {
			ids = append(ids, id)
		}
	}
	for _, r := range s.remote.subs {
		ids = append(ids, r.ID)
	}
	names := make([]string, len(s.shards))
	byName := make(map[string]broker.ShardID, len(s.shards))
	for i, sh := range s.shards {
		names[i] = shardName(sh)
		byName[names[i]] = sh
	}
	owner := make(map[broker.ShardID]*session, len(s.shards))
	ownerID := make(map[broker.ShardID]string, len(s.shards))
	changed := 0
	// Rebuilt from the last ring: a join or a leave hashes only the
	// newcomers, so a burst of N joins is not N full rings.
	s.ring = s.ring.Rebuild(ids)
	for name, id := range s.ring.Assign(names) {
		sh := byName[name]
		ownerID[sh] = id
		if s.ownerID[sh] != id {
			changed++
		}
		if sess := s.sessions[id]; sess != nil && !s.draining.Load() {
			owner[sh] = sess
		}
	}
	if changed > 0 {
		s.metrics.assignmentChanges.Add(float64(changed))
	}
	s.owner, s.ownerID = owner, ownerID
	if s.consumer == nil {
		s.announce()
		return
	}

	var fetch, away []broker.ShardID
	for _, sh := range s.shards {
		switch {
		case owner[sh] != nil:
			if s.releasing[sh] {
				continue // claimed again once the release is done
			}
			if !s.claimed[sh] {
				if !s.mayClaim(sh) {
					continue // the previous reader has not let go yet, or may not have
				}
				s.claimed[sh] = true
				s.metrics.shardsClaimed.Inc()
				s.log.Debug("claimed a shard", "shard", shardName(sh))
			}
			fetch = append(fetch, sh)
		case s.claimed[sh]:
			// Moved away: stop fetching, drop what was not delivered,
			// let go once nothing is in flight.
			if q := s.queues[sh]; q != nil {
				s.addBuffered(-len(q.pending))
				for _, m := range q.pending {
					delete(s.known, m.d.ID)
				}
				clear(q.pending)
				q.pending = nil
			}
			away = append(away, sh)
		}
	}
	for sh := range s.intents {
		if owner[sh] == nil || s.claimed[sh] {
			delete(s.intents, sh)
		}
	}
	s.askForIntents()
	if !slices.Equal(fetch, s.fetching) {
		s.fetching = fetch
		s.consumer.Assign(fetch)
		if len(fetch) == 0 {
			s.pollErr = nil // nothing is read here, so nothing can fail
		}
	}
	for _, sh := range away { // after Assign: the consumer has stopped them
		s.maybeRelease(sh)
	}
	s.announce()
}

// announce gossips this node's subscribers, claims and intents of the
// subscription.
func (s *subscription) announce() {
	var st cluster.SubscriptionState
	if !s.draining.Load() {
		for _, sess := range s.sessions {
			st.Subscribers = append(st.Subscribers, cluster.SubscriberInfo{ID: sess.id, Topics: s.topics, OpenedAt: sess.openedAt})
		}
		slices.SortFunc(st.Subscribers, func(a, b cluster.SubscriberInfo) int { return cmp.Compare(a.ID, b.ID) })
	}
	for sh := range s.claimed {
		st.Claims = append(st.Claims, shardName(sh))
	}
	slices.Sort(st.Claims)
	for sh := range s.intents {
		st.Intents = append(st.Intents, shardName(sh))
	}
	slices.Sort(st.Intents)
	s.local.set(s.name, st, false)
}

// releaseResult is what a Release returned.
type releaseResult struct {
	shards []broker.ShardID
	err    error
}

// maybeRelease saves the position of a claimed shard this node no longer
// reads and drops the claim, once no message of it is in flight.
func (s *subscription) maybeRelease(sh broker.ShardID) {
	if !s.claimed[sh] || s.releasing[sh] || s.owner[sh] != nil && !s.draining.Load() {
		return
	}
	if q := s.queues[sh]; q != nil && q.held > 0 {
		return
	}
	if s.consumer == nil {
		return
	}
	s.releasing[sh] = true
	c, ctx, quit := s.consumer, s.releaseCtx, s.quit
	s.releases.Add(1)
	go func() {
		defer s.releases.Done()
		start := time.Now()
		err := c.Release(ctx, []broker.ShardID{sh})
		if err == nil {
			s.metrics.handoffSeconds.Observe(time.Since(start).Seconds())
		}
		select {
		case s.released <- releaseResult{shards: []broker.ShardID{sh}, err: err}:
		case <-quit:
		}
	}()
}

// afterRelease drops the claims of the shards saved; the recompute at its
// end starts a failed release again.
func (s *subscription) afterRelease(r releaseResult) {
	s.log.Debug("released shards", "shards", r.shards, "err", r.err)
	for _, sh := range r.shards {
		delete(s.releasing, sh)
		if r.err != nil {
			s.log.Warn("saving the position of a shard that moved away failed; retrying", "shard", shardName(sh), "err", r.err)
			continue
		}
		if s.claimed[sh] { // not voided meanwhile
			delete(s.claimed, sh)
			s.metrics.shardsClaimed.Dec()
		}
		delete(s.queues, sh)
	}
	s.recompute() // publishes the dropped claims; may claim again
}
