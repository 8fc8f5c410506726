package node

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/streamgate/streamgate/broker"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
	"github.com/streamgate/streamgate/ring"
)

// subscription is the per-subscription dispatcher of one node: it owns the
// backend consumer, the per-shard queues of fetched messages, and the
// in-flight messages of every session, all in one goroutine (run). Sessions
// talk to it through events; it talks to them through their outboxes, so it
// never blocks on a client.
type subscription struct {
	name    string
	cfg     Config
	backend broker.Subscriber
	metrics *metrics
	log     *slog.Logger

	events chan event     // from sessions
	stop   chan struct{}  // closed by the registry when no stream uses it
	done   chan struct{}  // closed when run has returned
	after  <-chan struct{} // a previous incarnation that must finish first

	// Owned by run.
	topics     []string // sorted; fixed while it has sessions
	spec       broker.SubscriptionSpec
	shards     []broker.ShardID
	sessions   map[string]*session
	owner      map[broker.ShardID]*session // from the ring
	queues     map[broker.ShardID]*shardQueue
	consumer   broker.Consumer
	poll       chan pollResult
	want       chan struct{} // a token: run wants the poller to poll
	pollStop   context.CancelFunc
	pollDone   chan struct{}
	seq        uint64
	pollErr    error     // non-nil while the backend cannot be read
	lastNotice time.Time // of the last UNAVAILABLE notice
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
	evDrain
)

type event struct {
	kind   eventKind
	sess   *session
	ids    []string
	spec   broker.SubscriptionSpec // join
	shards []broker.ShardID        // join
	reply  chan error              // join
}

type pollResult struct {
	ds  []broker.Delivery
	err error
}

func newSubscription(name string, cfg Config, backend broker.Subscriber, m *metrics, log *slog.Logger, after <-chan struct{}) *subscription {
	return &subscription{
		name:     name,
		cfg:      cfg,
		backend:  backend,
		metrics:  m,
		log:      log.With("subscription", name),
		events:   make(chan event, 256),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		after:    after,
		sessions: map[string]*session{},
		owner:    map[broker.ShardID]*session{},
		queues:   map[broker.ShardID]*shardQueue{},
		poll:     make(chan pollResult, 1),
		want:     make(chan struct{}, 1),
	}
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
func (s *subscription) join(ctx context.Context, sess *session, spec broker.SubscriptionSpec, shards []broker.ShardID) error {
	reply := make(chan error, 1)
	if !s.send(ctx, event{kind: evJoin, sess: sess, spec: spec, shards: shards, reply: reply}) {
		return fmt.Errorf("%w: subscription %q is closing", broker.ErrUnavailable, s.name)
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *subscription) run() {
	defer close(s.done)
	if s.after != nil {
		<-s.after // the previous incarnation's final commit comes first
	}
	tick := time.NewTicker(max(min(s.cfg.AckTimeout/4, time.Second), 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case ev := <-s.events:
			s.handle(ev)
		case r := <-s.poll:
			s.polled(r)
		case now := <-tick.C:
			s.expire(now)
		case <-s.stop:
			// No stream uses us any more; apply what they sent last.
			for {
				select {
				case ev := <-s.events:
					s.handle(ev)
					continue
				default:
				}
				break
			}
			s.closeConsumer()
			return
		}
		s.dispatch()
	}
}

func (s *subscription) handle(ev event) {
	switch ev.kind {
	case evJoin:
		ev.reply <- s.add(ev.sess, ev.spec, ev.shards)
	case evLeave:
		s.remove(ev.sess)
	case evAck:
		s.ack(ev.sess, ev.ids)
	case evNack:
		s.nack(ev.sess, ev.ids)
	case evDrain:
		for _, sess := range s.sessions {
			s.remove(sess)
			sess.out.notify(notice(codes.Unavailable, true, "node draining, reconnect"))
		}
	}
}

func (s *subscription) add(sess *session, spec broker.SubscriptionSpec, shards []broker.ShardID) error {
	topics := slices.Clone(spec.Topics)
	slices.Sort(topics)
	if len(s.sessions) > 0 && !slices.Equal(topics, s.topics) {
		return preconditionf("subscription %q reads topics %v; this subscriber asked for %v (every subscriber of a subscription names the same topics)", s.name, s.topics, topics)
	}
	if len(s.sessions) == 0 {
		s.topics, s.spec = topics, spec
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
	s.rebalance()
	if s.pollErr != nil {
		sess.out.notify(notice(codes.Unavailable, false, "backend unavailable: "+s.pollErr.Error()))
	}
	return nil
}

// remove takes sess out: its in-flight messages go back to the front of
// their shards, for the shards' next owners.
func (s *subscription) remove(sess *session) {
	if sess.gone {
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
	s.rebalance()
}

func mapValues(m map[string]*message) []*message {
	out := make([]*message, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// handBack returns in-flight messages of sess to their shard queues, in
// fetch order and ahead of anything newer.
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
		slices.SortFunc(ms, func(a, b *message) int { return cmpSeq(a.seq, b.seq) })
		q.pending = mergeBySeq(ms, q.pending)
	}
}

func cmpSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
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

// rebalance recomputes shard -> session from the ring. Messages in flight
// stay with their holder: a shard's new owner gets nothing of it until the
// holder has acked them or left (dispatch checks the holder).
func (s *subscription) rebalance() {
	ids := make([]string, 0, len(s.sessions))
	for id := range s.sessions {
		ids = append(ids, id)
	}
	names := make([]string, len(s.shards))
	byName := make(map[string]broker.ShardID, len(s.shards))
	for i, sh := range s.shards {
		names[i] = shardName(sh)
		byName[names[i]] = sh
	}
	owner := make(map[broker.ShardID]*session, len(s.shards))
	for name, sid := range ring.Assign(ids, names) {
		owner[byName[name]] = s.sessions[sid]
	}
	s.owner = owner
	if s.consumer != nil {
		s.consumer.Assign(s.shards) // one node: it reads every shard
	}
}

func (s *subscription) openConsumer() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := s.backend.Consume(ctx, s.spec)
	if err != nil {
		return err
	}
	s.consumer = c
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

// closeConsumer stops fetching, saves the acked position and drops every
// buffered message: with no subscribers the node holds nothing.
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
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.consumer.Close(ctx); err != nil {
		s.log.Warn("closing the backend consumer", "err", err)
	}
	s.consumer = nil
	select {
	case <-s.want:
	default:
	}
	s.metrics.consumers.Dec()
	s.queues = map[broker.ShardID]*shardQueue{}
	s.pollErr = nil
}

func (s *subscription) polled(r pollResult) {
	if s.consumer == nil {
		return // a late result from a closed consumer
	}
	for i := range r.ds {
		s.seq++
		d := r.ds[i]
		q := s.queue(d.Shard)
		q.pending = append(q.pending, &message{d: d, seq: s.seq})
	}
	now := time.Now()
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
		s.queue(m.d.Shard).release(1)
		acked = append(acked, id)
	}
	if len(acked) > 0 {
		s.consumer.Ack(acked...)
		s.metrics.acks.Add(float64(len(acked)))
	}
}

func (s *subscription) nack(sess *session, ids []string) {
	if sess.gone {
		return
	}
	var back []*message
	for _, id := range ids {
		if m := sess.inflight[id]; m != nil {
			back = append(back, m)
		} else {
			s.metrics.unknownAcks.Inc()
		}
	}
	s.handBack(sess, back)
}

// expire ends sessions that hold a message for longer than the ack timeout.
func (s *subscription) expire(now time.Time) {
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
		s.remove(sess)
		sess.out.notify(notice(codes.DeadlineExceeded, true, fmt.Sprintf(
			"%d message(s) held un-acked for longer than the ack timeout of %s; they go to another subscriber", late, s.cfg.AckTimeout)))
	}
}

// dispatch hands queued messages to the shards' owners, within their
// limits; a shard whose messages are in flight with another session waits.
func (s *subscription) dispatch() {
	if len(s.sessions) == 0 {
		return
	}
	now := time.Now()
	out := map[*session][]outgoing{}
	for id, q := range s.queues {
		if len(q.pending) == 0 {
			continue
		}
		owner := s.owner[id]
		if owner == nil || (q.holder != nil && q.holder != owner) {
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
		}
		clear(q.pending[:n])
		q.pending = q.pending[n:]
		q.holder = owner
		q.held += n
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
	if s.consumer == nil {
		return false
	}
	if s.pollErr != nil {
		return true
	}
	queued := make(map[*session]int, len(s.sessions))
	for id, q := range s.queues {
		if owner := s.owner[id]; owner != nil {
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
