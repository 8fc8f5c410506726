// Dead letters (a subscription's max_delivery_attempts and
// dead_letter_topic): a message that fails on its Nth delivery or a later
// one (nacked, handed back by ModifyAckDeadline 0, or held past its ack
// deadline) is not handed back but published to the dead-letter topic,
// and acked in the consumer only once that publish is confirmed. N counts
// deliveries cluster-wide: the consumer saves each message's count with
// the shard's position (Consumer.Delivered), so it survives a move of the
// shard and a node restart. A message handed back because its stream
// ended for another reason (it closed, the node drains) is not a failure
// and is not dead-lettered.
//
// Until the publish is confirmed the message stays held: it counts as in
// flight in its shard (shardQueue.held), so the shard's saved position
// does not pass it and the shard is not released to another node; and
// its shard delivers nothing new (shardQueue.deadLettering), so no
// subscriber is handed a later message of the shard before this one has
// left it (messages already in flight stay with their holder). A failed
// publish is retried with backoff, without end: a dead-letter topic that
// cannot be written holds its shards, never loses a message.
//
// run never calls the backend's Publish itself: handing a message off may
// wait for the backend's buffers (up to deadLetterHandOff) or its network,
// and every stream of the subscription would wait with it. It queues the
// publish (deadLetters.out) for a sender goroutine of the consumer's
// (sendDeadLetters, deadletter_send.go), which publishes in queue order,
// so one shard's dead letters still leave in its order. The queue holds
// at most one publish per held dead letter.
//
// Publish results come from the backend's goroutines into a mailbox
// (deadLetters.mu and done, signalled on sig) that run drains; a result
// for a message voided meanwhile (its shard moved away under this node or
// was reset: voidDeadLetters) or for an older publish of it finds no
// match and is dropped. Everything but the mailbox runs on run.

package node

import (
	"cmp"
	"slices"
	"sync"
	"time"

	"github.com/streamgate/streamgate/broker"
)

// The headers a dead letter carries besides the message's own (which are
// kept, but for earlier values of these keys: a dead letter dead-lettered
// again from the dead-letter topic names its latest source).
const (
	headerSourceSubscription = "streamgate.source.subscription"
	headerSourceTopic        = "streamgate.source.topic"
	headerSourceShard        = "streamgate.source.shard"      // the shard's name, as Message.shard gives it
	headerSourceMessageID    = "streamgate.source.message_id" // stands for the message's position
	headerDeliveryAttempts   = "streamgate.delivery_attempts" // decimal
	headerErrorReason        = "streamgate.error_reason"      // the last nack's reason, or reasonDeadline
)

var deadLetterHeaderKeys = []string{headerSourceSubscription, headerSourceTopic, headerSourceShard,
	headerSourceMessageID, headerDeliveryAttempts, headerErrorReason}

const (
	// reasonDeadline is the error reason of a message held past its ack
	// deadline.
	reasonDeadline = "ack deadline exceeded"
	// reasonNacked is the error reason of a nack that gave none, when no
	// earlier nack of the message gave one either.
	reasonNacked = "nacked"
)

const (
	// deadLetterHandOff bounds how long run waits for the backend to take
	// a dead letter (its buffers may be full); a publish not taken by then
	// fails and is retried.
	deadLetterHandOff = time.Second
	// deadLetterCloseWait bounds how long closing the consumer waits for
	// dead letters in flight, so that those confirmed are acked before
	// the final save rather than delivered again by the next reader.
	deadLetterCloseWait = 5 * time.Second
	// A failed dead-letter publish is retried after this backoff, doubling
	// with each failure up to the maximum.
	deadLetterRetryMin = 100 * time.Millisecond
	deadLetterRetryMax = 10 * time.Second
)

// deadLetters is the subscription's dead-lettering state. held and the
// timer are owned by run; done is the mailbox of publish results.
type deadLetters struct {
	held    map[string]*deadLetter // by message id; made with the first dead letter
	gen     uint64                 // numbers publishes, so that a result names its publish
	timer   *time.Timer            // fires when a failed publish is due again
	timerAt time.Time              // when timer fires; zero when it is not armed

	mu   sync.Mutex // guards done and out
	done []deadLetterResult
	sig  chan struct{} // capacity 1: done has something; made with held

	out     []deadLetterSend // publishes for the sender, in order
	outSig  chan struct{}    // capacity 1: out has something; made with held
	senderQ chan struct{}    // the consumer's quit the running sender stops on; run's
}

// deadLetterSend is one publish queued for the sender.
type deadLetterSend struct {
	shard broker.ShardID // the message's source shard
	msg   *broker.Message
	r     deadLetterResult
}

// deadLetter is one message on its way to the dead-letter topic. The
// results mailbox holds at most one result per deadLetter (one publish in
// flight each), so it is bounded by the messages held.
type deadLetter struct {
	m        *message
	topic    string // the dead-letter topic when it started
	reason   string
	gen      uint64    // the publish in flight; 0: none
	failures int       // publishes that failed so far
	retryAt  time.Time // after a failure: publish again then
}

// deadLetterResult is one publish's outcome, from the backend.
type deadLetterResult struct {
	id  string
	gen uint64
	err error
}

// post hands a publish result to run; it never blocks (it runs on the
// backend's goroutine).
func (d *deadLetters) post(r deadLetterResult) {
	d.mu.Lock()
	d.done = append(d.done, r)
	d.mu.Unlock()
	signal(d.sig)
}

// deadLetterDue says whether m, failing on the delivery it is on, goes to
// the dead-letter topic.
func (s *subscription) deadLetterDue(m *message) bool {
	st := &s.settings
	return st.maxAttempts > 0 && st.deadLetter != "" && s.publisher != nil && int64(m.attempt) >= int64(st.maxAttempts)
}

// takeDeadLetters dead-letters those of msgs, failed messages sess held,
// that are due (taking them out of sess), and returns the others, to be
// handed back. reason is the failure's ("": the message's last nack
// reason).
func (s *subscription) takeDeadLetters(sess *session, msgs []*message, reason string) []*message {
	var due []*message
	rest := msgs[:0]
	for _, m := range msgs {
		if s.deadLetterDue(m) {
			due = append(due, m)
		} else {
			rest = append(rest, m)
		}
	}
	// In fetch order: one shard's dead letters are published in its order.
	slices.SortFunc(due, bySeq)
	for _, m := range due {
		delete(sess.inflight, m.d.ID)
		m.holder = nil
		why := reason
		if why == "" {
			why = m.reason
		}
		if why == "" {
			why = reasonNacked
		}
		s.startDeadLetter(m, why)
	}
	return rest
}

// startDeadLetter holds m (it stays counted in its shard's held messages)
// and publishes it to the dead-letter topic.
func (s *subscription) startDeadLetter(m *message, reason string) {
	d := &s.dead
	if d.held == nil {
		d.held = map[string]*deadLetter{}
		d.sig = make(chan struct{}, 1)
		d.outSig = make(chan struct{}, 1)
	}
	if d.held[m.d.ID] != nil {
		return // cannot be: a message is held once (known)
	}
	dl := &deadLetter{m: m, topic: s.settings.deadLetter, reason: reason}
	d.held[m.d.ID] = dl
	s.queue(m.d.Shard).deadLettering++
	s.log.Info("dead-lettering a message", "id", m.d.ID, "shard", shardName(m.d.Shard), "attempts", m.attempt, "topic", dl.topic, "reason", reason)
	s.publishDeadLetter(dl)
}

// deadLetterC is the mailbox's signal; nil (never ready) before the first
// dead letter.
func (s *subscription) deadLetterC() <-chan struct{} { return s.dead.sig }

// deadLetterRetryC is the retry timer's channel while it is armed, else
// nil.
func (s *subscription) deadLetterRetryC() <-chan time.Time {
	if s.dead.timerAt.IsZero() {
		return nil
	}
	return s.dead.timer.C
}

// afterDeadLetters applies the publish results in the mailbox: a
// confirmed dead letter is acked and settled; a failed one is published
// again after its backoff.
func (s *subscription) afterDeadLetters() {
	s.takeDeadLetterResults(true)
	s.armDeadLetterRetry()
}

// takeDeadLetterResults applies the mailbox's results; release says
// whether a settled shard that moved away may be released now (not while
// the consumer closes).
func (s *subscription) takeDeadLetterResults(release bool) {
	d := &s.dead
	d.mu.Lock()
	rs := d.done
	d.done = nil
	d.mu.Unlock()
	now := time.Now()
	for _, r := range rs {
		dl := d.held[r.id]
		if dl == nil || dl.gen != r.gen {
			continue // voided meanwhile: its shard's next reader has it
		}
		dl.gen = 0
		if r.err != nil {
			dl.failures++
			dl.retryAt = now.Add(deadLetterBackoff(dl.failures))
			s.metrics.deadLetterFailures.Inc()
			s.log.Warn("publishing to the dead-letter topic failed; the message stays held and is published again",
				"id", r.id, "topic", dl.topic, "failures", dl.failures, "retry_in", dl.retryAt.Sub(now), "err", r.err)
			continue
		}
		s.settleDeadLetter(dl, release)
	}
}

// settleDeadLetter acks a dead letter whose publish is confirmed: the
// shard's position may pass it, and the shard delivers again.
func (s *subscription) settleDeadLetter(dl *deadLetter, release bool) {
	id, sh := dl.m.d.ID, dl.m.d.Shard
	delete(s.dead.held, id)
	delete(s.known, id)
	q := s.queue(sh)
	q.deadLettering--
	q.settle(1)
	s.consumer.Ack(id)
	s.metrics.deadLettered.WithLabelValues(s.name).Inc()
	s.log.Info("dead-lettered a message", "id", id, "topic", dl.topic, "attempts", dl.m.attempt)
	if release && q.held == 0 && !s.readsLocally(sh) {
		s.maybeRelease(sh)
	}
}

// bySeq orders messages as they were fetched.
func bySeq(a, b *message) int { return cmp.Compare(a.seq, b.seq) }

// voidDeadLetters drops the dead letters of shard sh, unacked (called by
// voidMessages): its position is another reader's now, or was reset, and
// whoever reads it next delivers them again. A publish in flight may
// still land: the message is then dead-lettered twice (at least once).
func (s *subscription) voidDeadLetters(sh broker.ShardID) {
	for id, dl := range s.dead.held {
		if dl.m.d.Shard == sh {
			delete(s.dead.held, id)
			delete(s.known, id)
		}
	}
	if q := s.queues[sh]; q != nil {
		q.deadLettering = 0
	}
	// Those the sender has not taken yet are not sent.
	d := &s.dead
	d.mu.Lock()
	d.out = slices.DeleteFunc(d.out, func(p deadLetterSend) bool { return p.shard == sh })
	d.mu.Unlock()
}

// finishDeadLetters runs as the consumer closes (closeConsumer): it waits
// a while for the dead letters in flight, acks those confirmed (the
// consumer's final save then covers them), and drops the rest, unacked:
// their shards' next reader delivers them again, and they are
// dead-lettered on their next failure.
func (s *subscription) finishDeadLetters() {
	d := &s.dead
	defer func() {
		s.stopDeadLetterTimer()
		for _, dl := range d.held {
			delete(s.known, dl.m.d.ID)
		}
		clear(d.held)
		d.mu.Lock()
		d.out = nil // not sent: delivered again by the shard's next reader
		d.mu.Unlock()
	}()
	inFlight := func() bool {
		for _, dl := range d.held {
			if dl.gen != 0 {
				return true
			}
		}
		return false
	}
	if !inFlight() {
		return
	}
	wait := time.NewTimer(deadLetterCloseWait)
	defer wait.Stop()
	for inFlight() {
		select {
		case <-d.sig:
			s.takeDeadLetterResults(false)
		case <-wait.C:
			s.log.Warn("dead letters not confirmed before the consumer closed; they are delivered again", "count", len(d.held))
			return
		}
	}
}
