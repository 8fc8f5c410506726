// Ownership: a node delivers a shard only while it is sure no other node
// does. Three rules keep that, on top of the ring and the claims gossip
// (handoff.go):
//
//   - Claims are exclusive. A node that wants a shard no one claims
//     publishes an intent and asks every member to acknowledge its state
//     (Membership.Ask); it claims only once all have, in states that show
//     neither a claim of the shard, nor an objection to the intent (the
//     member knows a claim by a third node, one this node may believe
//     dead), nor an intent of a node whose name sorts first. A member that
//     saw the intent claims nothing of it (unless its own intent takes
//     precedence, which the first node then sees), so two nodes never
//     claim one shard at once, even on views that differ.
//   - Standing. A node that may have been declared dead (frozen, cut off,
//     suspected) stops delivering at once (Membership.Standing), and acts
//     on its claims again only after the cluster acknowledged it and it
//     confirmed each claim: claims another node now holds are dropped, and
//     every other one is saved with its fence (Consumer.Confirm), which
//     fails for a shard another reader took meanwhile.
//   - Fenced saves. The backend makes every save of a reader fail once a
//     newer reader took the shard (ShardLost), so a stale position never
//     overwrites a newer one.
//
// Everything here runs on the subscription's goroutine (run, dispatcher.go),
// but for the Confirm call, which runs on a goroutine of its own counted by
// releases and given up when the consumer closes.

package node

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/streamgate/streamgate/broker"
)

// confirmResult is what a Confirm returned.
type confirmResult struct {
	epoch uint64
	lost  []broker.ShardID
	err   error
}

// mayClaim says whether this node may claim sh now, which a local session
// owns, publishing an intent first where the cluster must acknowledge it.
func (s *subscription) mayClaim(sh broker.ShardID) bool {
	name := shardName(sh)
	if s.seekHeld() { // a seek is moving the positions (seek.go)
		delete(s.intents, sh)
		return false
	}
	if !s.mayDeliver() || s.remote.claims[name] != "" || s.remote.unsynced || s.remote.objected[name] {
		delete(s.intents, sh)
		return false
	}
	if s.members == nil {
		return true // a node of its own
	}
	for _, node := range s.remote.intents[name] {
		if node < s.cfg.NodeName {
			delete(s.intents, sh) // its intent takes precedence
			return false
		}
	}
	ask, ok := s.intents[sh]
	if !ok {
		s.intents[sh] = 0 // asked for by askForIntents
		return false
	}
	if ask == 0 || !s.remote.ackedBy(ask) {
		return false
	}
	delete(s.intents, sh)
	return true
}

// askForIntents publishes new intents and asks the cluster to
// acknowledge them.
func (s *subscription) askForIntents() {
	fresh := false
	for _, ask := range s.intents {
		fresh = fresh || ask == 0
	}
	if !fresh || s.members == nil {
		return
	}
	s.announce() // the ask's state must hold the intents
	ask := s.members.Ask()
	for sh, a := range s.intents {
		if a == 0 {
			s.intents[sh] = ask
		}
	}
}

// mayDeliver says whether the node may deliver, fetch and claim now: its
// standing holds, and its claims were confirmed since it was last in
// doubt (checkStanding).
func (s *subscription) mayDeliver() bool {
	if s.members == nil {
		return true
	}
	ok, epoch := s.members.Standing()
	return ok && epoch == s.confirmed
}

// checkStanding starts confirming this node's claims when its standing
// came back after it was in doubt. run calls it after every event.
func (s *subscription) checkStanding() {
	if s.members == nil || s.confirming || time.Now().Before(s.confirmAfter) {
		return
	}
	ok, epoch := s.members.Standing()
	if !ok || epoch == s.confirmed {
		return
	}
	// Claims another node holds now were taken while this one was in
	// doubt: drop them unsaved. Confirm the others with their fences.
	var mine, taken []broker.ShardID
	for sh := range s.claimed {
		if s.remote.claims[shardName(sh)] != "" {
			taken = append(taken, sh)
		} else {
			mine = append(mine, sh)
		}
	}
	voided := map[*session]int{}
	for _, sh := range taken {
		s.void(sh, fmt.Sprintf("node %s reads it now", s.remote.claims[shardName(sh)]), true, voided)
	}
	s.tellVoided(voided, "this node's membership was in doubt and other nodes took shards over")
	if !s.confirm(epoch, mine) && len(taken) > 0 {
		s.recompute()
	}
}

// disputeClaims confirms, with their fences, claims that another node
// gossips too: two halves of a split cluster that merge, or a node that
// came back after the others had forgotten it. The fence decides: the
// reader whose save fails drops the shard. Until then neither side
// delivers it here.
func (s *subscription) disputeClaims() {
	if s.members == nil || s.confirming || !s.mayDeliver() || time.Now().Before(s.confirmAfter) {
		return
	}
	var disputed []broker.ShardID
	for sh := range s.claimed {
		if s.remote.claims[shardName(sh)] != "" {
			disputed = append(disputed, sh)
			s.disputed[sh] = true
		}
	}
	if len(disputed) > 0 {
		s.log.Warn("another node claims shards this one reads; the fence decides", "shards", len(disputed))
		s.confirm(s.confirmed, disputed)
	}
}

// confirm saves shards with their fences in the background; afterConfirm
// drops those another reader has taken. epoch is the standing epoch the
// claims are confirmed for. With nothing to save it confirms at once, and
// reports whether it did so (and recomputed).
func (s *subscription) confirm(epoch uint64, shards []broker.ShardID) bool {
	if s.consumer == nil || len(shards) == 0 {
		s.confirmedAt(epoch)
		return true
	}
	s.confirming = true
	c, ctx, quit := s.consumer, s.releaseCtx, s.quit
	s.releases.Add(1)
	go func() {
		defer s.releases.Done()
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		lost, err := c.Confirm(cctx, shards)
		select {
		case s.confirms <- confirmResult{epoch: epoch, lost: lost, err: err}:
		case <-quit:
		}
	}()
	return false
}

func (s *subscription) afterConfirm(r confirmResult) {
	if !s.confirming {
		return // the consumer closed since
	}
	s.confirming = false
	clear(s.disputed)
	voided := map[*session]int{}
	for _, sh := range r.lost {
		s.void(sh, "another node reads it now", false, voided)
	}
	s.tellVoided(voided, "another node took shards this one read")
	if r.err != nil {
		s.confirmAfter = time.Now().Add(time.Second)
		s.log.Warn("confirming claims failed; retrying", "err", r.err)
		return
	}
	s.confirmedAt(r.epoch)
}

// confirmedAt records that the claims are confirmed for a standing epoch,
// and recomputes: the node may claim and deliver again. Messages in flight
// get a fresh ack deadline when the node was in doubt: their subscribers
// could not ack while it did not run.
func (s *subscription) confirmedAt(epoch uint64) {
	if epoch == s.confirmed {
		s.recompute()
		return
	}
	defer s.recompute()
	s.confirmed = epoch
	now := time.Now()
	for _, sess := range s.sessions {
		for _, m := range sess.inflight {
			m.deadline = now.Add(s.settings.ackDeadline)
		}
	}
	s.log.Info("standing regained; claims confirmed")
}

// shardEvents applies what the consumer reports about shards.
func (s *subscription) shardEvents() {
	if s.consumer == nil {
		return
	}
	voided := map[*session]int{}
	var reset []string
	var resetWhy string
	lost := false
	for _, ev := range s.consumer.TakeEvents() {
		switch ev.Kind {
		case broker.ShardLost:
			s.log.Warn("another node took a shard", "shard", shardName(ev.Shard), "why", ev.Reason)
			s.void(ev.Shard, ev.Reason, false, voided)
			lost = true
		case broker.ShardReset:
			s.log.Warn("a shard was reset", "shard", shardName(ev.Shard), "why", ev.Reason)
			s.voidMessages(ev.Shard, voided)
			if q := s.queues[ev.Shard]; q != nil {
				q.notBefore = time.Time{} // a backoff of the old log's message does not hold the new log
			}
			reset = append(reset, shardName(ev.Shard))
			resetWhy = ev.Reason
		}
	}
	slices.Sort(reset)
	for _, sess := range s.sessions {
		var parts []string
		if len(reset) > 0 {
			parts = append(parts, fmt.Sprintf("shard(s) %s reset: %s", strings.Join(reset, ", "), resetWhy))
		}
		if n := voided[sess]; n > 0 {
			parts = append(parts, voidedText(n))
		}
		if len(parts) > 0 {
			sess.out.notify(notice(codes.Aborted, false, strings.Join(parts, "; ")))
		}
	}
	if lost {
		s.recompute()
	}
}

func voidedText(n int) string {
	return fmt.Sprintf("%d message(s) this stream holds moved with their shard and are void: their acks are ignored, and they are delivered again", n)
}

// tellVoided tells each session how many of its messages were made void.
func (s *subscription) tellVoided(voided map[*session]int, why string) {
	for sess, n := range voided {
		sess.out.notify(notice(codes.Aborted, false, why+"; "+voidedText(n)))
	}
}

// void drops this node's claim of sh, unsaved: another node reads it now.
// abandon tells the consumer to forget it too (it already has, for a
// shard it reported lost). It counts voided messages per session.
func (s *subscription) void(sh broker.ShardID, reason string, abandon bool, voided map[*session]int) {
	s.voidMessages(sh, voided)
	if abandon && s.consumer != nil {
		s.consumer.Abandon([]broker.ShardID{sh})
	}
	if s.claimed[sh] {
		delete(s.claimed, sh)
		s.metrics.shardsClaimed.Dec()
	}
	delete(s.intents, sh)
	delete(s.queues, sh)
	// Assigned again (with a new fence) if this node claims it again.
	s.fetching = slices.DeleteFunc(s.fetching, func(f broker.ShardID) bool { return f == sh })
	s.log.Info("dropped a shard's claim", "shard", shardName(sh), "why", reason)
}

// voidMessages drops what this node holds of sh, queued or in flight: the
// messages' ids no longer stand for what the shard's reader will deliver.
// Their acks are ignored. It counts voided messages per session.
func (s *subscription) voidMessages(sh broker.ShardID, voided map[*session]int) {
	s.voidDeadLetters(sh) // before the queue's counts go
	if q := s.queues[sh]; q != nil {
		s.addBuffered(-len(q.pending))
		for _, m := range q.pending {
			delete(s.known, m.d.ID)
		}
		q.pending = nil
		q.holder, q.held = nil, 0
	}
	for _, sess := range s.sessions {
		for id, m := range sess.inflight {
			if m.d.Shard == sh {
				delete(sess.inflight, id)
				delete(s.known, id)
				voided[sess]++
				s.metrics.voided.Inc()
			}
		}
		sess.out.drop(sh) // queued for the stream, not sent yet
	}
}
