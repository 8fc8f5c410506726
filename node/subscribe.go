package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"

	"github.com/streamgate/streamgate/broker"
	"github.com/streamgate/streamgate/cluster"
	"github.com/streamgate/streamgate/internal/auth"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// maxNameBytes bounds subscription and topic names.
const maxNameBytes = 249

// maxReasonBytes bounds a nack's reason.
const maxReasonBytes = 1024

// subscribeService implements the Subscriber gRPC service.
type subscribeService struct {
	pb.UnimplementedSubscriberServer
	cfg     Config
	backend broker.Subscriber
	metrics *metrics
	log     *slog.Logger
	members Membership // nil: a cluster of one
	local   *localState
	auth    *auth.Auth // nil: auth off (node/auth.go)

	running  sync.WaitGroup // subscription goroutines
	draining *atomic.Bool   // the server's drain flag
	mu       sync.Mutex     // guards subs and stopping, and orders them with draining
	subs     map[string]*subRef
	stopping map[string]*subscription // stopped, still saving their position
	seeks    seekGate                 // subscriptions a seek holds off claiming (seek.go)

	creating creations // implicit creations under way (subscriptions_open.go)
}

// subRef counts the streams using a subscription; the last one out stops it.
type subRef struct {
	sub  *subscription
	refs int
}

func newSubscribeService(cfg Config, backend broker.Subscriber, m *metrics, log *slog.Logger, members Membership, draining *atomic.Bool) *subscribeService {
	return &subscribeService{cfg: cfg, backend: backend, metrics: m, log: log, members: members, draining: draining,
		local: &localState{m: members, subs: map[string]cluster.SubscriptionState{}},
		subs:  map[string]*subRef{}, stopping: map[string]*subscription{}}
}

// watchCluster hands every change of the cluster view to the local
// subscriptions, until ctx ends. It runs on a goroutine of the server's.
func (s *subscribeService) watchCluster(ctx context.Context) {
	if s.members == nil {
		return
	}
	for {
		select {
		case <-s.members.Changes():
		case <-ctx.Done():
			return
		}
		view := s.members.View()
		joined := s.members.Joined()
		for _, sub := range s.open() {
			r := remoteOf(view, sub.name)
			r.unsynced = r.unsynced || !joined
			sub.offerView(r)
		}
	}
}

// refreshShards reads every open subscription's shards again now and then,
// so that shards added to a topic are read, and every node (each reads them
// itself) assigns the same set. It runs on a goroutine of the server's.
func (s *subscribeService) refreshShards(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		for _, sub := range s.open() {
			topics := sub.currentTopics()
			if len(topics) == 0 {
				continue
			}
			qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			shards, err := s.backend.Shards(qctx, topics)
			cancel()
			if err != nil {
				continue // the next round tries again; polls report outages
			}
			sub.send(ctx, event{kind: evShards, spec: broker.SubscriptionSpec{Topics: topics}, shards: shards})
		}
	}
}

// open lists the subscriptions with streams on this node.
func (s *subscribeService) open() []*subscription {
	s.mu.Lock()
	defer s.mu.Unlock()
	subs := make([]*subscription, 0, len(s.subs))
	for _, r := range s.subs {
		subs = append(subs, r.sub)
	}
	return subs
}

// remote is what the rest of the cluster says about a subscription now.
func (s *subscribeService) remote(name string) remoteState {
	if s.members == nil {
		return remoteState{claims: map[string]string{}}
	}
	r := remoteOf(s.members.View(), name)
	r.unsynced = r.unsynced || !s.members.Joined()
	return r
}

// drain refuses new streams and ends every open one with the terminal
// UNAVAILABLE "node draining" notice once its in-flight messages are
// settled (acked, or handed back at the timeout); meanwhile the node stops
// fetching and hands its shards over. When ctx ends, the streams still
// open end at once and their un-acked messages go to the shards' next
// readers. drain returns when every subscription has saved its position.
func (s *subscribeService) drain(ctx context.Context) {
	// Under mu, so that a stream that acquires a subscription either sees
	// the flag or is among those open() lists below.
	s.mu.Lock()
	s.draining.Store(true)
	s.mu.Unlock()
	if s.members != nil {
		s.members.SetDraining(true)
	}
	bg := context.Background()
	for _, sub := range s.open() {
		sub.send(bg, event{kind: evDrain})
	}
	if s.wait(ctx) {
		return
	}
	for _, sub := range s.open() {
		sub.send(bg, event{kind: evDrainNow})
	}
	s.wait(bg)
}

// wait waits until every subscription has stopped and saved its position
// (true), or ctx ends (false).
func (s *subscribeService) wait(ctx context.Context) bool {
	done := make(chan struct{})
	go func() {
		s.running.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

// acquire returns the running subscription called name, starting it if
// needed, and counts one more user; nil when the node is draining.
func (s *subscribeService) acquire(name string) *subscription {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining.Load() {
		return nil
	}
	r := s.subs[name]
	if r == nil {
		var after <-chan struct{}
		if old := s.stopping[name]; old != nil {
			after = old.done
		}
		sub := newSubscription(name, s.cfg, s.backend, s.metrics, s.log, s.local, s.members, after, s.draining)
		sub.seeks = &s.seeks
		if p, ok := s.backend.(broker.Publisher); ok { // node.Backend is one: dead letters (deadletter.go)
			sub.publisher = p
		}
		r = &subRef{sub: sub}
		s.subs[name] = r
		s.running.Add(1)
		go func() {
			defer s.running.Done()
			sub.run()
			s.mu.Lock()
			if s.stopping[name] == sub {
				delete(s.stopping, name)
			}
			s.mu.Unlock()
		}()
	}
	r.refs++
	return r.sub
}

// unref counts one user less; the last one stops the subscription, whose
// final commit a new incarnation waits for.
func (s *subscribeService) unref(sub *subscription) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.subs[sub.name]
	if r == nil || r.sub != sub {
		return
	}
	r.refs--
	if r.refs == 0 {
		// A stream that comes next starts a new incarnation, which waits
		// for this one's final commit before it opens the backend.
		delete(s.subs, sub.name)
		s.stopping[sub.name] = sub
		close(sub.stop)
	}
}

// Subscribe serves one subscriber: Open, then acks and nacks in; opened,
// message batches and notices out.
func (s *subscribeService) Subscribe(stream grpc.BidiStreamingServer[pb.SubscribeRequest, pb.SubscribeResponse]) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	req, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return grpcError(invalidf("the stream ended before open: the first request of a Subscribe stream must carry open"))
	}
	if err != nil {
		return grpcError(err)
	}
	open := req.GetOpen()
	if open == nil {
		return grpcError(invalidf("the first request of a Subscribe stream must carry open"))
	}
	spec, err := validateOpen(open)
	if err != nil {
		return grpcError(err)
	}
	if err := s.authorizeOpen(ctx, spec); err != nil {
		return grpcError(err)
	}
	if err := s.checkConfirm(open); err != nil {
		return grpcError(err)
	}
	shards, err := s.backend.Shards(ctx, spec.Topics)
	if err != nil {
		return grpcError(err)
	}
	// The stored settings (subscriptions_open.go); the stored start
	// position wins over the open's.
	set, err := s.resolveOpen(ctx, &spec)
	if err != nil {
		return grpcError(err)
	}
	limit := set.maxUnacked
	if m := open.GetMaxUnacked(); m > 0 && int(m) < limit {
		limit = int(m)
	}
	sess := newSession(limit)
	sess.confirm = open.GetConfirmAcks()
	sub := s.acquire(spec.Name)
	if sub == nil {
		return grpcError(fmt.Errorf("%w: node draining, reconnect", broker.ErrUnavailable))
	}
	defer s.unref(sub)
	if !sub.send(ctx, event{kind: evSettings, set: set}) {
		return grpcError(fmt.Errorf("%w: subscription %q is closing", broker.ErrUnavailable, spec.Name))
	}
	// The subscription exists from the moment its first subscriber is
	// answered: every shard gets its saved start first.
	if err := sub.prepare(ctx, spec, shards); err != nil {
		return grpcError(err)
	}
	if err := sub.join(ctx, sess, spec, shards, s.remote(spec.Name)); err != nil {
		return grpcError(err)
	}
	s.settleSettings(ctx, sub)
	leave := func() { sub.send(context.Background(), event{kind: evLeave, sess: sess}) }
	if err := stream.Send(&pb.SubscribeResponse{Response: &pb.SubscribeResponse_Opened{Opened: &pb.Opened{
		SubscriberId:       sess.id,
		MaxUnacked:         uint32(limit),
		Node:               s.cfg.NodeName,
		AckDeadlineSeconds: uint32(max(1, set.ackDeadline/time.Second)),
	}}}); err != nil {
		leave()
		return err
	}

	readErr := make(chan error, 1)
	go func() { readErr <- s.readLoop(ctx, stream, sub, sess) }()
	writeErr := make(chan error, 1)
	var standing func() bool
	if s.members != nil {
		standing = func() bool { ok, _ := s.members.Standing(); return ok }
	}
	go func() { writeErr <- sess.out.writeLoop(ctx, stream, standing) }()

	select {
	case err = <-readErr:
		leave()
		cancel()
		// The writer stops at once unless it is stuck in Send on a client
		// that does not read; returning unblocks it.
		select {
		case <-writeErr:
		case <-time.After(time.Second):
		}
	case err = <-writeErr:
		// A terminal notice went out (the session is already gone) or
		// the stream broke.
		leave()
		cancel()
	case <-sess.out.ended:
		// A terminal notice: give the writer a moment to send it to a
		// client that reads, then end the stream with its status anyway.
		select {
		case err = <-writeErr:
		case <-time.After(time.Second):
			err = sess.out.terminalErr()
		}
		leave()
		cancel()
	}
	// The reader ends when the stream does, right after we return.
	return grpcError(err)
}

// readLoop applies acks and nacks until the client closes its side (nil) or
// breaks a rule.
func (s *subscribeService) readLoop(ctx context.Context, stream grpc.BidiStreamingServer[pb.SubscribeRequest, pb.SubscribeResponse], sub *subscription, sess *session) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch r := req.GetRequest().(type) {
		case *pb.SubscribeRequest_Open:
			return invalidf("open sent twice: a stream opens once; open another stream to subscribe again")
		case *pb.SubscribeRequest_Ack:
			if err := s.checkAckIDs("ack", len(r.Ack.GetMessageIds())); err != nil {
				return err
			}
			if ids := r.Ack.GetMessageIds(); len(ids) > 0 && !sub.send(ctx, event{kind: evAck, sess: sess, ids: ids}) {
				return ctx.Err()
			}
		case *pb.SubscribeRequest_Nack:
			if err := s.checkAckIDs("nack", len(r.Nack.GetMessageIds())); err != nil {
				return err
			}
			secs := r.Nack.GetDelaySeconds()
			if d := time.Duration(secs) * time.Second; d > maxNackDelay {
				return invalidf("nack: delay_seconds %d is over the maximum of %d", secs, int(maxNackDelay/time.Second))
			}
			if len(r.Nack.GetReason()) > maxReasonBytes || !utf8.ValidString(r.Nack.GetReason()) {
				return invalidf("nack: reason must be valid UTF-8 of at most %d bytes", maxReasonBytes)
			}
			ev := event{kind: evNack, sess: sess, ids: r.Nack.GetMessageIds(), extend: time.Duration(secs) * time.Second,
				reason: strings.Clone(r.Nack.GetReason())} // the request's frame is not kept
			if len(ev.ids) > 0 && !sub.send(ctx, ev) {
				return ctx.Err()
			}
		case *pb.SubscribeRequest_ModifyAckDeadline:
			if err := s.checkAckIDs("modify_ack_deadline", len(r.ModifyAckDeadline.GetMessageIds())); err != nil {
				return err
			}
			secs := r.ModifyAckDeadline.GetAckDeadlineSeconds()
			if d := time.Duration(secs) * time.Second; d > maxAckDeadline {
				return invalidf("modify_ack_deadline: ack_deadline_seconds %d is over the maximum of %d", secs, int(maxAckDeadline/time.Second))
			}
			ids := r.ModifyAckDeadline.GetMessageIds()
			if len(ids) > 0 && !sub.send(ctx, event{kind: evExtend, sess: sess, ids: ids, extend: time.Duration(secs) * time.Second}) {
				return ctx.Err()
			}
		}
	}
}

// validateOpen checks an Open and turns it into a backend spec.
func validateOpen(o *pb.Open) (broker.SubscriptionSpec, error) {
	spec := broker.SubscriptionSpec{Name: o.GetSubscription()}
	switch {
	case spec.Name == "":
		return spec, invalidf("open: subscription is empty")
	case len(spec.Name) > maxNameBytes || !utf8.ValidString(spec.Name):
		return spec, invalidf("open: subscription must be valid UTF-8 of at most %d bytes", maxNameBytes)
	case len(o.GetTopics()) == 0:
		return spec, invalidf("open: no topics")
	}
	for _, t := range o.GetTopics() {
		if t == "" {
			return spec, invalidf("open: a topic name is empty")
		}
		if len(t) > maxNameBytes || !utf8.ValidString(t) {
			return spec, invalidf("open: topic names must be valid UTF-8 of at most %d bytes", maxNameBytes)
		}
		if !slices.Contains(spec.Topics, t) {
			spec.Topics = append(spec.Topics, t)
		}
	}
	slices.Sort(spec.Topics)
	switch o.GetStartPosition() {
	case pb.StartPosition_START_POSITION_UNSPECIFIED, pb.StartPosition_START_POSITION_LATEST:
		spec.Start = broker.StartLatest
	case pb.StartPosition_START_POSITION_EARLIEST:
		spec.Start = broker.StartEarliest
	default:
		return spec, invalidf("open: unknown start_position %d", o.GetStartPosition())
	}
	return spec, nil
}
