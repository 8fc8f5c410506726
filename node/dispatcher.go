// The per-subscription dispatcher: the subscription type, its events and
// its event loop (run), the one goroutine that owns the subscription's
// state. Other goroutines (Subscribe streams, the admin service, the
// cluster watcher and the shard refresher) only call send, join, prepare,
// offerView and currentTopics, which hand work over through channels or
// use a lock of their own, and the registry closes stop. The rest of the
// dispatcher is split by concern, all of it run by run unless its file
// says otherwise: subscribers.go (sessions joining and leaving), queue.go
// (shard queues and redelivery), handoff.go (the assignment, claims and
// releases), ownership.go (exclusive claims and standing), backend.go (the
// consumer's lifecycle and its poller) and deliver.go (dispatch, acks,
// nacks and the ack timeout).

package node

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/streamgate/streamgate/broker"
	"github.com/streamgate/streamgate/cluster"
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
	// acksSaving confirms acks of confirm_acks sessions (confirm.go);
	// owned by run.
	acksSaving ackSaving
	// publisher takes dead letters (deadletter.go); nil: none are sent.
	publisher broker.Publisher
	// dead holds messages on their way to the dead-letter topic
	// (deadletter.go); owned by run.
	dead deadLetters
	// quit is closed (and made anew) when the consumer closes: Release
	// and Confirm goroutines give up handing over their results.
	quit chan struct{}

	topicsMu   sync.Mutex // guards topicsCopy
	topicsCopy []string   // topics, for the shard refresher

	viewMu   sync.Mutex    // guards nextView
	nextView *remoteState  // the latest view not yet applied
	viewCh   chan struct{} // capacity 1: nextView is set

	prepareLock chan struct{}           // capacity 1: held by the one prepare running; guards prepared
	prepared    map[broker.ShardID]bool // shards Prepare gave a saved position

	// Owned by run.
	topics       []string // sorted; fixed while it has sessions
	spec         broker.SubscriptionSpec
	shards       []broker.ShardID
	sessions     map[string]*session
	remote       remoteState
	haveView     bool                        // remote came from a view event, newer than any join's snapshot
	owner        map[broker.ShardID]*session // local owners, from the ring
	ownerID      map[broker.ShardID]string   // every owner, local or remote
	ring         *ring.Ring                  // over every subscriber, as of the last recompute
	stale        bool                        // sessions joined or left since the last recompute (recomputeStale)
	recomputeAt  time.Time                   // recomputeStale waits until then
	due          <-chan time.Time            // dueTimer's channel while it is armed for recomputeStale; nil otherwise
	dueTimer     *time.Timer
	retry        *time.Timer // fires when a delayed nack's shard may be delivered again (armRetry)
	retryAt      time.Time   // when retry fires; zero when it is not armed
	delays       bool        // a delayed nack may hold a shard (armRetry looks)
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
	draining     *atomic.Bool // the server's drain flag (an evDrain follows its setting)
	consumer     broker.Consumer
	consumerEvs  <-chan struct{} // the consumer's Events; nil without one
	poll         chan pollResult
	pollWanted   chan struct{} // a token: run wants the poller to poll
	pollStop     context.CancelFunc
	pollDone     chan struct{}
	seq          uint64
	pollErr      error     // non-nil while the backend cannot be read
	lastNotice   time.Time // of the last UNAVAILABLE notice
	buffered     int       // undelivered messages in queues
	settings     settings  // the stored settings in force (settings.go)
	seeks        *seekGate // holds claims while a seek moves the positions (seek.go); nil: never
	seekWait     bool      // claims were held by a seek: recompute when it is lifted (checkSeek)
}

type eventKind int

const (
	evJoin eventKind = iota
	evLeave
	evAck
	evNack
	evExtend
	evView     // the cluster view changed
	evDrain    // the node is shutting down: settle, then end every stream
	evDrainNow // the drain timeout passed: end every stream now
	evDescribe // admin: report shard states
	evShards   // the topics' shards, read again
	evSettings // the stored settings in force, or the subscription deleted (subscriptions_open.go)

	// admin, a seek (seek.go): evSeekHold voids and stops reading (reason:
	// the notice), evSeekResume reads again; both answer on reply.
	evSeekHold
	evSeekResume
)

type event struct {
	kind   eventKind
	sess   *session
	ids    []string
	extend time.Duration           // extend: the new ack deadline from now; nack: the delay
	reason string                  // nack
	spec   broker.SubscriptionSpec // join
	shards []broker.ShardID        // join
	remote remoteState             // join, view
	reply  chan error              // join
	info   chan []shardInfo        // describe
	set    settings                // settings
}

// shardInfo is what this node knows first-hand about one shard.
type shardInfo struct {
	shard    broker.ShardID
	claimed  bool
	inFlight int
}

func newSubscription(name string, cfg Config, backend broker.Subscriber, m *metrics, log *slog.Logger, local *localState, members Membership, after <-chan struct{}, draining *atomic.Bool) *subscription {
	s := &subscription{
		draining:    draining,
		name:        name,
		cfg:         cfg,
		backend:     backend,
		metrics:     m,
		log:         log.With("subscription", name),
		local:       local,
		members:     members,
		events:      make(chan event, 256),
		stop:        make(chan struct{}),
		done:        make(chan struct{}),
		after:       after,
		released:    make(chan releaseResult),
		confirms:    make(chan confirmResult),
		quit:        make(chan struct{}),
		prepared:    map[broker.ShardID]bool{},
		prepareLock: make(chan struct{}, 1),
		intents:     map[broker.ShardID]uint64{},
		disputed:    map[broker.ShardID]bool{},
		sessions:    map[string]*session{},
		owner:       map[broker.ShardID]*session{},
		ownerID:     map[broker.ShardID]string{},
		queues:      map[broker.ShardID]*shardQueue{},
		known:       map[string]bool{},
		viewCh:      make(chan struct{}, 1),
		claimed:     map[broker.ShardID]bool{},
		releasing:   map[broker.ShardID]bool{},
		poll:        make(chan pollResult, 1),
		pollWanted:  make(chan struct{}, 1),
		settings:    defaultSettings(cfg),
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
	defer s.stopDue()
	defer func() {
		if s.retry != nil {
			s.retry.Stop()
		}
	}()
	defer s.stopDeadLetterTimer()
	for {
		select {
		case ev := <-s.events:
			s.handle(ev)
		case <-s.due:
			s.due = nil // recomputeStale below
		case <-s.retryC():
			s.retryAt = time.Time{} // dispatch below, and armRetry for the next
		case r := <-s.poll:
			s.polled(r)
		case r := <-s.released:
			s.afterRelease(r)
		case r := <-s.confirms:
			s.afterConfirm(r)
		case <-s.deadLetterC():
			s.afterDeadLetters()
		case now := <-s.deadLetterRetryC():
			s.retryDeadLetters(now)
		case r := <-s.acksSaving.results:
			s.afterAckSave(r)
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
		if s.stale {
			s.recomputeStale(time.Now())
		}
		s.checkStanding()
		s.checkSeek()
		if !s.stale { // owner may name a session that left
			s.dispatch()
		}
		s.armRetry()
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
		s.nack(ev.sess, ev.ids, ev.extend, ev.reason)
	case evExtend:
		s.extend(ev.sess, ev.ids, ev.extend)
	case evView:
		s.remote, s.haveView = ev.remote, true
		s.resolveConflicts()
		s.recompute()
		s.disputeClaims()
	case evDrain: // the flag is set already; this makes the subscription act on it
		s.recompute() // stops fetching; our subscribers leave the ring
		for _, sess := range s.sessions {
			if len(sess.inflight) == 0 && sess.unconfirmed == 0 { // else when its acks are answered (confirm.go)
				s.end(sess, codes.Unavailable, "node draining, reconnect")
			}
		}
	case evDrainNow:
		for _, sess := range s.sessions {
			s.end(sess, codes.Unavailable, "node draining, reconnect")
		}
	case evDescribe:
		if s.stale {
			s.recompute() // report the claims of the subscribers it has
		}
		ev.info <- s.describe()
	case evSettings:
		s.applySettings(ev.set)
	case evSeekHold:
		s.seekVoid(ev.reason)
		ev.reply <- nil
	case evSeekResume:
		s.checkSeek()
		ev.reply <- nil
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
