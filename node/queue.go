// Shard queues: each shard's fetched, undelivered messages in fetch order,
// the one session that holds its in-flight ones, and redelivery: messages
// handed back (a nack, a session that left) are queued again ahead of
// newer ones. Everything here runs on the subscription's goroutine (run,
// dispatcher.go).

package node

import (
	"cmp"
	"slices"
	"time"

	"github.com/streamgate/streamgate/broker"
)

// shardQueue holds one shard's fetched, undelivered messages in order, and
// who holds its in-flight ones.
type shardQueue struct {
	pending []*message // by seq; messages handed back come first
	holder  *session   // the one session with in-flight messages of this shard
	held    int        // its messages in flight with holder
	// notBefore: a delayed nack holds the shard's delivery until then.
	notBefore time.Time
	// deadLettering counts its messages on their way to the dead-letter
	// topic (deadletter.go), counted in held too: the shard delivers
	// nothing new until they are gone.
	deadLettering int
}

// queue returns shard id's queue, making it if needed.
func (s *subscription) queue(id broker.ShardID) *shardQueue {
	q := s.queues[id]
	if q == nil {
		q = &shardQueue{}
		s.queues[id] = q
	}
	return q
}

// settle counts n in-flight messages of the shard settled or handed
// back; with none left the shard has no holder.
func (q *shardQueue) settle(n int) {
	q.held -= n
	if q.held <= 0 {
		q.held, q.holder = 0, nil
	}
}

// readsLocally says whether this node delivers shard id now: a local
// session owns it, and the node claims it and is not releasing it.
func (s *subscription) readsLocally(id broker.ShardID) bool {
	return s.owner[id] != nil && s.claimed[id] && !s.releasing[id]
}

// handBack returns in-flight messages of sess to their shard queues, in
// fetch order and ahead of anything newer. Messages of shards this node no
// longer reads are dropped instead: their position is not saved past them,
// so the shard's next reader fetches them again.
func (s *subscription) handBack(sess *session, msgs []*message) {
	byShard := map[broker.ShardID][]*message{}
	for _, m := range msgs {
		delete(sess.inflight, m.d.ID)
		m.holder = nil
		byShard[m.d.Shard] = append(byShard[m.d.Shard], m)
		s.metrics.redeliveries.Inc()
	}
	for id, ms := range byShard {
		q := s.queue(id)
		q.settle(len(ms))
		if !s.readsLocally(id) {
			for _, m := range ms {
				delete(s.known, m.d.ID)
			}
			s.maybeRelease(id)
			continue
		}
		slices.SortFunc(ms, func(a, b *message) int { return cmp.Compare(a.seq, b.seq) })
		q.pending = mergeBySeq(ms, q.pending)
		s.addBuffered(len(ms))
	}
}

// mergeBySeq merges two lists sorted by seq.
func mergeBySeq(a, b []*message) []*message {
	out := make([]*message, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if a[0].seq < b[0].seq {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	return append(append(out, a...), b...)
}

// mapValues lists a session's in-flight messages, in no order.
func mapValues(m map[string]*message) []*message {
	out := make([]*message, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// addBuffered counts undelivered messages in the queues.
func (s *subscription) addBuffered(n int) {
	s.buffered += n
	s.metrics.buffered.Add(float64(n))
}
