// Delivery: dispatch hands queued messages to their shard's owner within
// its limit of un-acked messages and asks the poller for more while a
// subscriber could take more; acks settle messages (and let a shard that
// moved away be released), nacks hand them back for redelivery, and expire
// ends a subscriber that holds a message past the ack timeout. Everything
// here runs on the subscription's goroutine (run, dispatcher.go).

package node

import (
	"fmt"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/streamgate/streamgate/broker"
)

// dispatch hands queued messages to the shards' owners, within their
// limits; a shard whose messages are in flight with another session waits.
func (s *subscription) dispatch() {
	if len(s.sessions) == 0 || s.draining.Load() || !s.mayDeliver() {
		return
	}
	now := time.Now()
	out := map[*session][]outgoing{}
	var ids []string
	for id, q := range s.queues {
		if len(q.pending) == 0 {
			continue
		}
		owner := s.owner[id]
		if owner == nil || (q.holder != nil && q.holder != owner) || s.disputed[id] || now.Before(q.notBefore) {
			continue
		}
		if q.deadLettering > 0 {
			continue // its next message waits for the dead letter ahead of it (deadletter.go)
		}
		n := min(owner.max-len(owner.inflight), len(q.pending))
		if n <= 0 {
			continue
		}
		for _, m := range q.pending[:n] {
			m.attempt++
			m.deadline = now.Add(s.settings.ackDeadline)
			m.holder = owner
			owner.inflight[m.d.ID] = m
			out[owner] = append(out[owner], outgoing{d: &m.d, attempt: m.attempt})
			ids = append(ids, m.d.ID)
		}
		clear(q.pending[:n])
		q.pending = q.pending[n:]
		q.holder = owner
		q.held += n
		s.addBuffered(-n)
	}
	if len(ids) > 0 {
		s.consumer.Delivered(ids...) // before the subscriber can ack them
	}
	for sess, msgs := range out {
		sess.out.push(msgs)
		s.metrics.delivered.Add(float64(len(msgs)))
	}
	if s.hungry() {
		signal(s.pollWanted)
	}
}

// hungry says whether a subscriber could take more than is queued for it,
// or the backend is failing (polls tell when it recovers).
func (s *subscription) hungry() bool {
	if s.consumer == nil || len(s.fetching) == 0 || !s.mayDeliver() {
		return false
	}
	if s.pollErr != nil {
		return true
	}
	queued := make(map[*session]int, len(s.sessions))
	now := time.Now()
	for id, q := range s.queues {
		// A shard held by a delay, a backoff or a dead letter cannot give
		// its queue now: counted, it would stop the fetches of the
		// owner's other shards for as long as it is held.
		if q.deadLettering > 0 || now.Before(q.notBefore) {
			continue
		}
		if owner := s.owner[id]; owner != nil && (q.holder == nil || q.holder == owner) {
			queued[owner] += len(q.pending)
		}
	}
	for _, sess := range s.sessions {
		if queued[sess] < sess.max-len(sess.inflight) {
			return true
		}
	}
	return false
}

// ack settles messages sess holds and hands the acks to the consumer;
// unknown ids (settled already, or void) are counted and ignored.
func (s *subscription) ack(sess *session, ids []string) {
	if sess.gone {
		return
	}
	acked := make([]string, 0, len(ids))
	var rejected []string // confirm_acks: answered FAILED_PRECONDITION
	// Acks come in runs of one shard: its queue is looked up once a run.
	var (
		run broker.ShardID
		q   *shardQueue
	)
	for _, id := range ids {
		m := sess.inflight[id]
		if m == nil {
			s.metrics.unknownAcks.Inc()
			if sess.confirm {
				rejected = append(rejected, id)
			}
			continue
		}
		delete(sess.inflight, id)
		delete(s.known, id)
		if q == nil || m.d.Shard != run {
			run, q = m.d.Shard, s.queue(m.d.Shard)
		}
		q.settle(1)
		if q.held == 0 && !s.readsLocally(m.d.Shard) {
			defer s.maybeRelease(m.d.Shard) // after the ack reaches the consumer
		}
		acked = append(acked, id)
	}
	s.rejectAcks(sess, rejected)
	if len(acked) > 0 {
		s.ackConsumer(sess, acked)
		s.metrics.acks.Add(float64(len(acked)))
	}
	if s.draining.Load() && len(sess.inflight) == 0 && sess.unconfirmed == 0 {
		s.end(sess, codes.Unavailable, "node draining, reconnect")
	}
}

// armRetry sets the retry timer for the earliest delayed shard that has
// messages waiting, so that they go out when their delay ends rather than
// at the next tick. With no delayed nack since the last look that found
// none waiting, it does nothing.
func (s *subscription) armRetry() {
	if !s.delays {
		return
	}
	now := time.Now()
	var next time.Time
	for _, q := range s.queues {
		if len(q.pending) > 0 && q.notBefore.After(now) && (next.IsZero() || q.notBefore.Before(next)) {
			next = q.notBefore
		}
	}
	if next.IsZero() {
		s.delays = false // an armed timer may still fire: a dispatch with nothing to do
		return
	}
	if !s.retryAt.IsZero() && !next.Before(s.retryAt) {
		return // armed for that time or earlier
	}
	if s.retry == nil {
		s.retry = time.NewTimer(next.Sub(now))
	} else {
		s.retry.Stop()
		s.retry.Reset(next.Sub(now))
	}
	s.retryAt = next
}

// retryC is the retry timer's channel while it is armed, else nil.
func (s *subscription) retryC() <-chan time.Time {
	if s.retryAt.IsZero() {
		return nil
	}
	return s.retry.C
}

// maxNackDelay is the longest redelivery delay a nack may ask for.
const maxNackDelay = 600 * time.Second

// nack hands messages sess holds back to their shards for redelivery, no
// sooner than delay from now: their shards wait that long (one shard's
// messages stay in order).
func (s *subscription) nack(sess *session, ids []string, delay time.Duration, reason string) {
	if sess.gone {
		return
	}
	var back []*message
	for _, id := range ids {
		if m := sess.inflight[id]; m != nil {
			delete(sess.inflight, id) // a repeated id is handed back once
			if reason != "" {
				m.reason = reason
			}
			back = append(back, m)
		} else {
			s.metrics.unknownAcks.Inc()
		}
	}
	// Due messages go to the dead-letter topic, delay or not; a nack
	// without a delay waits out the retry policy's backoff.
	back = s.takeDeadLetters(sess, back, "")
	if delay == 0 {
		s.backOff(back)
	}
	if delay > 0 {
		s.delays = true
		at := time.Now().Add(delay)
		for _, m := range back {
			if q := s.queue(m.d.Shard); q.notBefore.Before(at) {
				q.notBefore = at
			}
		}
	}
	if reason != "" && len(back) > 0 {
		s.log.Debug("messages nacked", "subscriber", sess.id, "count", len(back), "delay", delay, "reason", reason)
	}
	s.handBack(sess, back)
	if s.draining.Load() && len(sess.inflight) == 0 && sess.unconfirmed == 0 { // else when its acks are answered (confirm.go)
		s.end(sess, codes.Unavailable, "node draining, reconnect")
	}
}

// maxAckDeadline is the longest deadline ModifyAckDeadline gives (Pub/Sub's).
const maxAckDeadline = 600 * time.Second

// extend gives messages sess holds a new ack deadline of d from now; d of
// 0 hands them back as a nack. Ids it does not hold are counted and
// ignored, as for acks.
func (s *subscription) extend(sess *session, ids []string, d time.Duration) {
	if sess.gone {
		return
	}
	if d == 0 {
		s.nack(sess, ids, 0, "")
		return
	}
	deadline := time.Now().Add(d)
	for _, id := range ids {
		if m := sess.inflight[id]; m != nil {
			m.deadline = deadline
		} else {
			s.metrics.unknownAcks.Inc()
		}
	}
}

// expire ends sessions that hold a message past its ack deadline.
func (s *subscription) expire(now time.Time) {
	if !s.mayDeliver() {
		return // subscribers cannot ack what a node in doubt does not read
	}
	for _, sess := range s.sessions {
		var failed []*message
		for _, m := range sess.inflight {
			if now.After(m.deadline) {
				failed = append(failed, m)
			}
		}
		late := len(failed)
		if late == 0 {
			continue
		}
		s.log.Info("subscriber timed out", "subscriber", sess.id, "late", late)
		s.metrics.timeouts.Inc()
		// The late messages failed: those due are dead-lettered, the others
		// wait out the retry policy's backoff. The rest of what sess holds
		// is handed back as for any stream that ends.
		s.backOff(s.takeDeadLetters(sess, failed, reasonDeadline))
		s.end(sess, codes.DeadlineExceeded, fmt.Sprintf(
			"%d message(s) held un-acked past their ack deadline (the ack deadline of %s unless extended); they go to another subscriber", late, s.settings.ackDeadline))
	}
}
