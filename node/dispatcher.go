package node

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/streamgate/streamgate/broker"
	"github.com/streamgate/streamgate/cluster"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
	"github.com/streamgate/streamgate/ring"
)

// subscription is the per-subscription dispatcher of one node: it owns the
// backend consumer, the per-shard queues of fetched messages, the in-flight
// messages of every local session and the node's shard claims, all in one
// goroutine (run). Sessions talk to it through events; it talks to them
// through their outboxes, so it never blocks on a client.
//
// Cluster: every node computes the same shard -> subscriber assignment from
// the gossiped subscribers (ring). A node reads a shard only when one of its
// own sessions owns it and no other node claims it; it claims the shard
// (gossip) while it reads it or its messages are in flight. A shard that
// moves away stops being fetched, its undelivered messages are dropped,
// and once its in-flight messages are settled its acked position is saved
// (Release) and the claim dropped; only then may the new owner's node claim
// it and read from the saved position. So one shard is read by one node at
// a time and its order holds across moves.
type subscription struct {
	name    string
	cfg     Config
	backend broker.Subscriber
	metrics *metrics
	log     *slog.Logger
	local   *localState
	members Membership // nil: a node of its own

	events   chan event      // from sessions and the service
	stop     chan struct{}   // closed by the registry when no stream uses it
	done     chan struct{}   // closed when run has returned
	after    <-chan struct{} // a previous incarnation that must finish first
	released chan releaseResult
	confirms chan confirmResult
	quit     chan struct{} // closed when run is leaving: release goroutines give up

	topicsMu   sync.Mutex // guards topicsCopy
	topicsCopy []string   // topics, for the shard refresher

	viewMu   sync.Mutex    // guards nextView
	nextView *remoteState  // the latest view not yet applied
	viewCh   chan struct{} // capacity 1: nextView is set

	preparedMu sync.Mutex              // guards prepared
	prepared   map[broker.ShardID]bool // shards Prepare gave a saved position

	// Owned by run.
	topics       []string // sorted; fixed while it has sessions
	spec         broker.SubscriptionSpec
	shards       []broker.ShardID
	sessions     map[string]*session
	remote       remoteState
	haveView     bool                        // remote came from a view event, newer than any join's snapshot
	owner        map[broker.ShardID]*session // local owners, from the ring
	ownerID      map[broker.ShardID]string   // every owner, local or remote
	queues       map[broker.ShardID]*shardQueue
	known        map[string]bool           // ids queued or in flight: a message is never held twice
	claimed      map[broker.ShardID]bool   // claims this node gossips
	intents      map[broker.ShardID]uint64 // shards it wants to claim -> the ask (0: not asked yet)
	confirmed    uint64                    // the standing epoch whose claims are confirmed
	confirming   bool                      // a Confirm is running
	confirmAfter time.Time                 // a failed Confirm is retried after this
	disputed     map[broker.ShardID]bool   // claimed by another node too: not delivered until confirmed
	fetching     []broker.ShardID          // what the consumer was last assigned
	releasing    map[broker.ShardID]bool
	releases     sync.WaitGroup
	releaseCtx   context.Context // ends with the consumer: releases give up
	releaseStop  context.CancelFunc
	draining     bool
	consumer     broker.Consumer
	consumerEvs  <-chan struct{} // the consumer's Events; nil without one
	poll         chan pollResult
	want         chan struct{} // a token: run wants the poller to poll
	pollStop     context.CancelFunc
	pollDone     chan struct{}
	seq          uint64
	pollErr      error     // non-nil while the backend cannot be read
	lastNotice   time.Time // of the last UNAVAILABLE notice
	buffered     int       // undelivered messages in queues
	lastAssigned time.Time
}

// shardQueue holds one shard's fetched, undelivered messages in order, and
// who holds its in-flight ones.
type shardQueue struct {
	pending []*message // by seq; messages handed back come first
	holder  *session   // the one session with in-flight messages of this shard
	held    int
}

type eventKind int

const (
	evJoin eventKind = iota
	evLeave
	evAck
	evNack
	evView     // the cluster view changed
	evDrain    // the node is shutting down: settle, then end every stream
	evDrainNow // the drain timeout passed: end every stream now
	evDescribe // admin: report shard states
	evShards   // the topics' shards, read again
)

type event struct {
	kind   eventKind
	sess   *session
	ids    []string
	spec   broker.SubscriptionSpec // join
	shards []broker.ShardID        // join
	remote remoteState             // join, view
	reply  chan error              // join
	info   chan []shardInfo        // describe
}

type pollResult struct {
	ds  []broker.Delivery
	err error
}

type releaseResult struct {
	shards []broker.ShardID
	err    error
}

// shardInfo is what this node knows first-hand about one shard.
type shardInfo struct {
	shard    broker.ShardID
	claimed  bool
	inFlight int
}

func newSubscription(name string, cfg Config, backend broker.Subscriber, m *metrics, log *slog.Logger, local *localState, members Membership, after <-chan struct{}) *subscription {
	s := &subscription{
		name:      name,
		cfg:       cfg,
		backend:   backend,
		metrics:   m,
		log:       log.With("subscription", name),
		local:     local,
		members:   members,
		events:    make(chan event, 256),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
		after:     after,
		released:  make(chan releaseResult),
		confirms:  make(chan confirmResult),
		quit:      make(chan struct{}),
		prepared:  map[broker.ShardID]bool{},
		intents:   map[broker.ShardID]uint64{},
		disputed:  map[broker.ShardID]bool{},
		sessions:  map[string]*session{},
		owner:     map[broker.ShardID]*session{},
		ownerID:   map[broker.ShardID]string{},
		queues:    map[broker.ShardID]*shardQueue{},
		known:     map[string]bool{},
		viewCh:    make(chan struct{}, 1),
		claimed:   map[broker.ShardID]bool{},
		releasing: map[broker.ShardID]bool{},
		poll:      make(chan pollResult, 1),
		want:      make(chan struct{}, 1),
	}
	if members != nil {
		// Claims from before this incarnation were confirmed by it, or
		// dropped with its consumer.
		_, s.confirmed = members.Standing()
	}
	return s
}

// send hands an event to run; false if the subscription has stopped or ctx
// ended first.
func (s *subscription) send(ctx context.Context, ev event) bool {
	select {
	case s.events <- ev:
		return true
	case <-s.done:
	case <-ctx.Done():
	}
	return false
}

// join adds sess; it fails when the topics differ from the subscription's.
func (s *subscription) join(ctx context.Context, sess *session, spec broker.SubscriptionSpec, shards []broker.ShardID, remote remoteState) error {
	reply := make(chan error, 1)
	if !s.send(ctx, event{kind: evJoin, sess: sess, spec: spec, shards: shards, remote: remote, reply: reply}) {
		return fmt.Errorf("%w: subscription %q is closing", broker.ErrUnavailable, s.name)
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		// The join may still be applied: take it back.
		s.send(context.Background(), event{kind: evLeave, sess: sess})
		return ctx.Err()
	}
}

func (s *subscription) run() {
	defer close(s.done)
	if s.after != nil {
		<-s.after // the previous incarnation's final save comes first
	}
	tick := time.NewTicker(max(min(s.cfg.AckTimeout/4, time.Second), 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case ev := <-s.events:
			s.handle(ev)
		case r := <-s.poll:
			s.polled(r)
		case r := <-s.released:
			s.afterRelease(r)
		case r := <-s.confirms:
			s.afterConfirm(r)
		case <-s.consumerEvs:
			s.shardEvents()
		case <-s.viewCh:
			s.viewMu.Lock()
			r := s.nextView
			s.nextView = nil
			s.viewMu.Unlock()
			if r != nil {
				s.handle(event{kind: evView, remote: *r})
			}
		case now := <-tick.C:
			s.expire(now)
		case <-s.stop:
			// No stream uses us any more; apply what they sent last.
			for drained := false; !drained; {
				select {
				case ev := <-s.events:
					s.handle(ev)
				default:
					drained = true
				}
			}
			for _, sess := range s.sessions {
				s.remove(sess)
			}
			s.closeConsumer()
			s.local.set(s.name, cluster.SubscriptionState{}, true)
			return
		}
		s.checkStanding()
		s.dispatch()
	}
}

func (s *subscription) handle(ev event) {
	switch ev.kind {
	case evJoin:
		ev.reply <- s.add(ev.sess, ev.spec, ev.shards, ev.remote)
	case evLeave:
		s.remove(ev.sess)
	case evAck:
		s.ack(ev.sess, ev.ids)
	case evNack:
		s.nack(ev.sess, ev.ids)
	case evView:
		s.remote, s.haveView = ev.remote, true
		s.resolveConflicts()
		s.recompute()
		s.disputeClaims()
	case evDrain:
		s.draining = true
		s.recompute() // stops fetching; our subscribers leave the ring
		for _, sess := range s.sessions {
			if len(sess.inflight) == 0 {
				s.end(sess, codes.Unavailable, "node draining, reconnect")
			}
		}
	case evDrainNow:
		for _, sess := range s.sessions {
			s.end(sess, codes.Unavailable, "node draining, reconnect")
		}
	case evDescribe:
		ev.info <- s.describe()
	case evShards:
		if len(s.sessions) > 0 && slices.Equal(ev.spec.Topics, s.topics) && !slices.Equal(ev.shards, s.shards) {
			s.log.Info("the topics' shards changed", "shards", len(ev.shards))
			s.shards = ev.shards
			s.recompute()
		}
	}
}

// offerView hands run the latest cluster view without ever blocking: views
// that run has not applied yet are replaced by newer ones.
func (s *subscription) offerView(r remoteState) {
	s.viewMu.Lock()
	s.nextView = &r
	s.viewMu.Unlock()
	signal(s.viewCh)
}

// currentTopics is the subscription's topics, for other goroutines.
func (s *subscription) currentTopics() []string {
	s.topicsMu.Lock()
	defer s.topicsMu.Unlock()
	return s.topicsCopy
}

// end removes sess and tells it why with a terminal notice.
func (s *subscription) end(sess *session, c codes.Code, msg string) {
	s.remove(sess)
	sess.out.notify(notice(c, true, msg))
}

func (s *subscription) add(sess *session, spec broker.SubscriptionSpec, shards []broker.ShardID, remote remoteState) error {
	if s.draining {
		return fmt.Errorf("%w: node draining, reconnect", broker.ErrUnavailable)
	}
	topics := slices.Clone(spec.Topics)
	slices.Sort(topics)
	if len(s.sessions) > 0 && !slices.Equal(topics, s.topics) {
		return preconditionf("subscription %q reads topics %v; this subscriber asked for %v (every subscriber of a subscription names the same topics)", s.name, s.topics, topics)
	}
	for _, r := range remote.subs {
		if !slices.Equal(sortedCopy(r.Topics), topics) {
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
	s.recompute()
	if s.pollErr != nil {
		sess.out.notify(notice(codes.Unavailable, false, "backend unavailable: "+s.pollErr.Error()))
	}
	return nil
}

func sortedCopy(in []string) []string {
	out := slices.Clone(in)
	slices.Sort(out)
	return out
}

// resolveConflicts ends local sessions whose topics differ from a remote
// subscriber that opened earlier: two nodes may accept conflicting opens
// before gossip tells them of each other; the later one loses.
func (s *subscription) resolveConflicts() {
	for _, sess := range s.sessions {
		for _, r := range s.remote.subs {
			if !slices.Equal(sortedCopy(r.Topics), s.topics) && r.OpenedAt.Before(sess.openedAt) {
				s.end(sess, codes.FailedPrecondition, fmt.Sprintf(
					"subscription %q reads topics %v (subscriber %s on node %s, opened first); this subscriber asked for %v",
					s.name, sortedCopy(r.Topics), r.ID, r.Node, s.topics))
				break
			}
		}
	}
}

// remove takes sess out: its in-flight messages go back to the front of
// their shards, for the shards' next owners.
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
	s.recompute()
}

func mapValues(m map[string]*message) []*message {
	out := make([]*message, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
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
		q.release(len(ms))
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

func (q *shardQueue) release(n int) {
	q.held -= n
	if q.held <= 0 {
		q.held, q.holder = 0, nil
	}
}

func (s *subscription) queue(id broker.ShardID) *shardQueue {
	q := s.queues[id]
	if q == nil {
		q = &shardQueue{}
		s.queues[id] = q
	}
	return q
}

// readsLocally says whether this node delivers shard id now: a local
// session owns it and the node claims it.
func (s *subscription) readsLocally(id broker.ShardID) bool {
	return s.owner[id] != nil && s.claimed[id] && !s.releasing[id]
}

// recompute derives the assignment from the ring over every subscriber
// (local and remote), then claims, fetches and releases shards to match.
// Messages in flight stay with their holder: a shard's new owner gets
// nothing of it until the holder has acked them or left (dispatch checks
// the holder; another node waits for the claim to go).
func (s *subscription) recompute() {
	ids := make([]string, 0, len(s.sessions)+len(s.remote.subs))
	if !s.draining {
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
	for name, id := range ring.Assign(ids, names) {
		sh := byName[name]
		ownerID[sh] = id
		if s.ownerID[sh] != id {
			changed++
		}
		if sess := s.sessions[id]; sess != nil && !s.draining {
			owner[sh] = sess
		}
	}
	if changed > 0 {
		s.metrics.assignmentChanges.Add(float64(changed))
	}
	s.owner, s.ownerID = owner, ownerID
	if s.consumer == nil {
		s.publish()
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
	s.publish()
}

// publish gossips this node's subscribers and claims of the subscription.
func (s *subscription) publish() {
	var st cluster.SubscriptionState
	if !s.draining {
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

// maybeRelease saves the position of a claimed shard this node no longer
// reads and drops the claim, once no message of it is in flight.
func (s *subscription) maybeRelease(sh broker.ShardID) {
	if !s.claimed[sh] || s.releasing[sh] || s.owner[sh] != nil && !s.draining {
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

func (s *subscription) openConsumer() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	spec := s.spec
	if s.members != nil {
		spec.Standing = func() bool {
			ok, _ := s.members.Standing()
			return ok
		}
	}
	c, err := s.backend.Consume(ctx, spec)
	if err != nil {
		return err
	}
	s.consumer = c
	s.consumerEvs = c.Events()
	s.fetching = nil
	s.releaseCtx, s.releaseStop = context.WithCancel(context.Background())
	s.metrics.consumers.Inc()
	pctx, stop := context.WithCancel(context.Background())
	s.pollStop, s.pollDone = stop, make(chan struct{})
	go s.pollLoop(pctx, c, s.pollDone)
	return nil
}

// pollLoop feeds run with fetched messages until ctx ends, polling only
// when run asks (some subscriber could take more than is queued for it), so
// that what the backend fetched ahead stays in its bounded buffers and does
// not count against a shard's limit. Empty polls are reported too (about
// one a second when idle): they tell run the backend answers again.
func (s *subscription) pollLoop(ctx context.Context, c broker.Consumer, done chan struct{}) {
	defer close(done)
	for {
		select {
		case <-s.want:
		case <-ctx.Done():
			return
		}
		ds, err := c.Poll(ctx, s.cfg.PollBatch)
		if ctx.Err() != nil {
			return
		}
		select {
		case s.poll <- pollResult{ds: ds, err: err}:
		case <-ctx.Done():
			return
		}
	}
}

// closeConsumer stops fetching, saves the acked position, drops every
// buffered message and every claim: with no subscribers the node holds
// nothing.
func (s *subscription) closeConsumer() {
	if s.consumer == nil {
		return
	}
	s.pollStop()
	<-s.pollDone
	select {
	case <-s.poll: // a result the loop handed over before it stopped
	default:
	}
	// The final save below covers what pending releases were saving.
	s.releaseStop()
	close(s.quit)
	s.releases.Wait()
	s.quit = make(chan struct{})
	clear(s.releasing)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.consumer.Close(ctx); err != nil {
		s.log.Warn("closing the backend consumer", "err", err)
	}
	s.consumer, s.consumerEvs = nil, nil
	select {
	case <-s.want:
	default:
	}
	s.metrics.consumers.Dec()
	s.metrics.shardsClaimed.Sub(float64(len(s.claimed)))
	clear(s.claimed)
	clear(s.intents)
	clear(s.disputed)
	s.confirming = false
	s.fetching = nil
	s.queues = map[broker.ShardID]*shardQueue{}
	clear(s.known)
	s.addBuffered(-s.buffered)
	s.pollErr = nil
	s.publish()
}

func (s *subscription) polled(r pollResult) {
	if s.consumer == nil {
		return // a late result from a closed consumer
	}
	for i := range r.ds {
		d := r.ds[i]
		q := s.queue(d.Shard)
		if !s.readsLocally(d.Shard) {
			continue // moved away since the fetch; fetched again by its next reader
		}
		if s.known[d.ID] {
			continue // fetched again while queued or in flight
		}
		s.known[d.ID] = true
		s.seq++
		q.pending = append(q.pending, &message{d: d, seq: s.seq, attempt: d.Attempts})
		s.addBuffered(1)
	}
	now := time.Now()
	if len(s.fetching) == 0 {
		r.err = nil // a poll from before this node stopped reading: nothing to report
	}
	switch {
	case r.err != nil:
		if s.pollErr == nil || now.Sub(s.lastNotice) >= s.cfg.NoticeInterval {
			s.lastNotice = now
			s.broadcast(notice(codes.Unavailable, false, "backend unavailable, retrying: "+r.err.Error()))
		}
		if s.pollErr == nil {
			s.log.Warn("backend unavailable", "err", r.err)
		}
		s.pollErr = r.err
	case s.pollErr != nil:
		s.pollErr = nil
		s.log.Info("backend available again")
		s.broadcast(notice(codes.OK, false, "backend available again; delivery resumed"))
	}
}

// addBuffered counts undelivered messages in the queues.
func (s *subscription) addBuffered(n int) {
	s.buffered += n
	s.metrics.buffered.Add(float64(n))
}

func (s *subscription) broadcast(n *pb.Notice) {
	for _, sess := range s.sessions {
		sess.out.notify(n)
	}
}

func (s *subscription) ack(sess *session, ids []string) {
	if sess.gone {
		return
	}
	acked := make([]string, 0, len(ids))
	for _, id := range ids {
		m := sess.inflight[id]
		if m == nil {
			s.metrics.unknownAcks.Inc()
			continue
		}
		delete(sess.inflight, id)
		delete(s.known, id)
		q := s.queue(m.d.Shard)
		q.release(1)
		if q.held == 0 && !s.readsLocally(m.d.Shard) {
			defer s.maybeRelease(m.d.Shard) // after the ack reaches the consumer
		}
		acked = append(acked, id)
	}
	if len(acked) > 0 {
		s.consumer.Ack(acked...)
		s.metrics.acks.Add(float64(len(acked)))
	}
	if s.draining && len(sess.inflight) == 0 {
		s.end(sess, codes.Unavailable, "node draining, reconnect")
	}
}

func (s *subscription) nack(sess *session, ids []string) {
	if sess.gone {
		return
	}
	var back []*message
	for _, id := range ids {
		if m := sess.inflight[id]; m != nil {
			delete(sess.inflight, id) // a repeated id is handed back once
			back = append(back, m)
		} else {
			s.metrics.unknownAcks.Inc()
		}
	}
	s.handBack(sess, back)
	if s.draining && len(sess.inflight) == 0 {
		s.end(sess, codes.Unavailable, "node draining, reconnect")
	}
}

// expire ends sessions that hold a message for longer than the ack timeout.
func (s *subscription) expire(now time.Time) {
	if !s.mayDeliver() {
		return // subscribers cannot ack what a node in doubt does not read
	}
	for _, sess := range s.sessions {
		var late int
		for _, m := range sess.inflight {
			if now.Sub(m.sentAt) > s.cfg.AckTimeout {
				late++
			}
		}
		if late == 0 {
			continue
		}
		s.log.Info("subscriber timed out", "subscriber", sess.id, "late", late)
		s.metrics.timeouts.Inc()
		s.end(sess, codes.DeadlineExceeded, fmt.Sprintf(
			"%d message(s) held un-acked for longer than the ack timeout of %s; they go to another subscriber", late, s.cfg.AckTimeout))
	}
}

// dispatch hands queued messages to the shards' owners, within their
// limits; a shard whose messages are in flight with another session waits.
func (s *subscription) dispatch() {
	if len(s.sessions) == 0 || s.draining || !s.mayDeliver() {
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
		if owner == nil || (q.holder != nil && q.holder != owner) || s.disputed[id] {
			continue
		}
		n := min(owner.max-len(owner.inflight), len(q.pending))
		if n <= 0 {
			continue
		}
		for _, m := range q.pending[:n] {
			m.attempt++
			m.sentAt = now
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
		signal(s.want)
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
	for id, q := range s.queues {
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

// describe reports the shards this node claims and acts on (not while its
// standing is in doubt), or has in flight.
func (s *subscription) describe() []shardInfo {
	var out []shardInfo
	acting := s.mayDeliver() // a claim held while in doubt is not acted on
	for _, sh := range s.shards {
		info := shardInfo{shard: sh, claimed: s.claimed[sh] && acting}
		if q := s.queues[sh]; q != nil {
			info.inFlight = q.held
		}
		if info.claimed || info.inFlight > 0 {
			out = append(out, info)
		}
	}
	return out
}
