// The subscription's local subscribers (sessions): joining, leaving, being
// ended with a terminal notice, topic conflicts with subscribers on other
// nodes, and notices to all of them. Everything here runs on the
// subscription's goroutine (run, dispatcher.go).

package node

import (
	"fmt"
	"slices"

	"google.golang.org/grpc/codes"

	"github.com/streamgate/streamgate/broker"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// add joins sess (evJoin), opening the backend consumer for the first
// one. It fails while the node drains, and when sess names other topics
// than the subscription's subscribers here or on other nodes. The ring
// takes sess in at the next recompute, before anything is dispatched
// (recomputeStale): sess is answered at once, and a burst of joins is one
// recompute.
func (s *subscription) add(sess *session, spec broker.SubscriptionSpec, shards []broker.ShardID, remote remoteState) error {
	if s.draining.Load() {
		return fmt.Errorf("%w: node draining, reconnect", broker.ErrUnavailable)
	}
	topics := slices.Clone(spec.Topics)
	slices.Sort(topics)
	if len(s.sessions) > 0 && !slices.Equal(topics, s.topics) {
		return preconditionf("subscription %q reads topics %v; this subscriber asked for %v (every subscriber of a subscription names the same topics)", s.name, s.topics, topics)
	}
	for _, r := range remote.subs {
		if !sameTopics(r.Topics, topics) {
			return preconditionf("subscription %q reads topics %v (subscriber %s on node %s); this subscriber asked for %v (every subscriber of a subscription names the same topics)", s.name, sortedCopy(r.Topics), r.ID, r.Node, topics)
		}
	}
	if len(s.sessions) == 0 {
		s.topics, s.spec = topics, spec
		s.topicsMu.Lock()
		s.topicsCopy = topics
		s.topicsMu.Unlock()
	}
	if !s.haveView {
		s.remote = remote
	}
	s.shards = shards
	s.sessions[sess.id] = sess
	s.metrics.subscribers.Inc()
	if s.consumer == nil {
		if err := s.openConsumer(); err != nil {
			delete(s.sessions, sess.id)
			s.metrics.subscribers.Dec()
			return err
		}
	}
	s.stale = true // recomputeStale
	if s.pollErr != nil {
		sess.out.notify(notice(codes.Unavailable, false, "backend unavailable: "+s.pollErr.Error()))
	}
	return nil
}

// end removes sess and tells it why with a terminal notice.
func (s *subscription) end(sess *session, c codes.Code, msg string) {
	s.remove(sess)
	sess.out.notify(notice(c, true, msg))
}

// remove takes sess out: its in-flight messages go back to the front of
// their shards, for the shards' next owners. As with add, the ring lets
// it go at the next recompute, before anything is dispatched.
func (s *subscription) remove(sess *session) {
	if sess.gone || s.sessions[sess.id] != sess {
		return
	}
	sess.gone = true
	delete(s.sessions, sess.id)
	s.metrics.subscribers.Dec()
	s.handBack(sess, mapValues(sess.inflight))
	if len(s.sessions) == 0 {
		s.closeConsumer()
		return
	}
	s.stale = true // recomputeStale
}

// resolveConflicts ends local sessions whose topics differ from a remote
// subscriber that opened earlier: two nodes may accept conflicting opens
// before gossip tells them of each other; the later one loses. It runs on
// every view, so it is linear in the subscribers: a session loses when
// the earliest remote subscriber that reads other topics opened before it
// (checking every pair cost 250,000 comparisons and copies a view with
// 500 subscribers on each of two nodes).
func (s *subscription) resolveConflicts() {
	var first *remoteSub // the earliest to open of those reading other topics
	for i := range s.remote.subs {
		r := &s.remote.subs[i]
		if !sameTopics(r.Topics, s.topics) && (first == nil || r.OpenedAt.Before(first.OpenedAt)) {
			first = r
		}
	}
	if first == nil {
		return
	}
	for _, sess := range s.sessions {
		if first.OpenedAt.Before(sess.openedAt) {
			s.end(sess, codes.FailedPrecondition, fmt.Sprintf(
				"subscription %q reads topics %v (subscriber %s on node %s, opened first); this subscriber asked for %v",
				s.name, sortedCopy(first.Topics), first.ID, first.Node, s.topics))
		}
	}
}

// sameTopics says whether topics, in any order, are the set sorted.
// Subscribers announce theirs sorted (announce), so it seldom copies.
func sameTopics(topics, sorted []string) bool {
	if !slices.IsSorted(topics) {
		topics = sortedCopy(topics)
	}
	return slices.Equal(topics, sorted)
}

// sortedCopy returns a sorted copy of in.
func sortedCopy(in []string) []string {
	out := slices.Clone(in)
	slices.Sort(out)
	return out
}

// broadcast hands a notice to every local session.
func (s *subscription) broadcast(n *pb.Notice) {
	for _, sess := range s.sessions {
		sess.out.notify(n)
	}
}
