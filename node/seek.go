// Seek: Admin.Seek moves every shard's saved position of a subscription
// while its subscribers stay connected, on every node at once. Three steps,
// run by the node that takes the request:
//
//  1. Hold: every member (local_only, phase 1) stops reading the
//     subscription. Its running subscription voids what it holds (queued
//     and in flight: their acks are ignored from then on), abandons its
//     claims unsaved, tells its subscribers with a non-terminal ABORTED
//     notice, and claims nothing of the subscription until step 3 or
//     seekHold has passed (so that a lost step 3 cannot stop it for good).
//     A node without the subscription only blocks claims, for a subscriber
//     that opens meanwhile.
//  2. Move: the backend (broker.Seeker) writes each shard's position,
//     taking each shard's reader fence as a new reader would: a member that
//     missed step 1 still reads with the old fence, and its next save fails
//     (ShardLost), so it cannot move a position back. Until that save (it
//     saves after acks, at most --commit-interval later, or hourly when
//     idle) it goes on from its old position: what it delivers meanwhile
//     is voided then, and delivered again from the new position if it is
//     past it (duplicates, never a loss).
//  3. Resume: every member (phase 2) lifts the hold and recomputes: shards
//     are claimed again and read from the new position.
//
// Step 3 runs even when step 2 fails, so that subscribers are held up for
// as short a time as possible; the request then fails with the backend's
// error, and positions are those of before or of the seek, shard by shard
// (a retried Seek finishes it).

package node

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"

	"github.com/streamgate/streamgate/broker"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

const (
	// seekHold bounds how long a node claims nothing of a subscription
	// after step 1, when step 3 does not come.
	seekHold = 30 * time.Second
	// seekMoveTimeout bounds step 2, well inside seekHold, so that the
	// positions are written while every node still holds off.
	seekMoveTimeout = 20 * time.Second
	// seekMemberTimeout bounds each member's answer to steps 1 and 3.
	seekMemberTimeout = 5 * time.Second
)

// Seek phases, as members pass them in SeekRequest.phase.
const (
	seekPhaseHold   = 1
	seekPhaseResume = 2
)

// seekGate is the set of subscriptions this node holds off claiming
// because a seek is moving them. The subscribe service owns it; the
// subscriptions ask it from their goroutines, the admin service sets it
// from request goroutines. Holds are counted, so that of two seeks of one
// subscription at once, the first one's resume does not lift the second
// one's hold; each ends at its deadline at the latest. The zero value is
// ready; a nil gate holds nothing (a subscription made without the
// service, in tests).
type seekGate struct {
	mu    sync.Mutex // guards holds
	holds map[string]gateHold
}

// gateHold is one subscription's holds: how many seeks hold it, and until
// when at the latest.
type gateHold struct {
	n     int
	until time.Time
}

func (g *seekGate) hold(name string, until time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.holds == nil {
		g.holds = map[string]gateHold{}
	}
	h := g.holds[name]
	h.n++
	if until.After(h.until) {
		h.until = until
	}
	g.holds[name] = h
}

// lift ends one hold of name.
func (g *seekGate) lift(name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	h, ok := g.holds[name]
	switch {
	case !ok:
	case h.n <= 1:
		delete(g.holds, name)
	default:
		h.n--
		g.holds[name] = h
	}
}

// held says whether name is held now; expired holds are dropped, so the
// map holds at most the seeks of the last seekHold.
func (g *seekGate) held(name string, now time.Time) bool {
	if g == nil {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	h, ok := g.holds[name]
	if ok && !now.Before(h.until) {
		delete(g.holds, name)
		ok = false
	}
	return ok
}

// seekHeld says whether a seek holds this subscription off claiming now.
// It notes the hold so that checkSeek recomputes once it is lifted.
func (s *subscription) seekHeld() bool {
	if s.seeks.held(s.name, time.Now()) {
		s.seekWait = true
		return true
	}
	return false
}

// checkSeek recomputes once a hold that stopped claims is lifted (step 3,
// or seekHold passed: run's tick comes at least every second). run calls
// it after every event.
func (s *subscription) checkSeek() {
	if s.seekWait && !s.seeks.held(s.name, time.Now()) {
		s.seekWait = false
		s.recompute()
	}
}

// seekVoid is step 1 on this node's subscription: void what it holds of
// every shard, abandon its claims unsaved (the seek's fences make any save
// of them fail anyway), stop reading, and tell every subscriber why.
func (s *subscription) seekVoid(why string) {
	voided := map[*session]int{}
	var drop []broker.ShardID
	for sh := range s.claimed {
		drop = append(drop, sh)
	}
	for sh := range s.queues {
		if !s.claimed[sh] {
			drop = append(drop, sh)
		}
	}
	for _, sh := range drop {
		s.void(sh, why, true, voided)
	}
	// A poll result already handed over holds messages fetched from the
	// old position; taken now, while no shard is read, they are dropped.
	// Left in the channel, run could take them after the resume, when
	// their shards are read again: duplicates, out of order.
	select {
	case r := <-s.poll:
		s.polled(r)
	default:
	}
	s.seekWait = true
	s.recompute() // claims nothing while held; gossips the dropped claims
	for _, sess := range s.sessions {
		sess.out.notify(notice(codes.Aborted, false, fmt.Sprintf(
			"%s; %d message(s) this stream holds are void: their acks are ignored, and delivery restarts at the new position", why, voided[sess])))
		if s.draining.Load() && len(sess.inflight) == 0 && sess.unconfirmed == 0 {
			// A draining node ends a stream once it holds nothing (and
			// its confirmations are answered); its last acks will not
			// come now.
			s.end(sess, codes.Unavailable, "node draining, reconnect")
		}
	}
}

// seekTarget reads the request's target.
func seekTarget(req *pb.SeekRequest) (broker.SeekTo, string, error) {
	switch t := req.GetTarget().(type) {
	case *pb.SeekRequest_To:
		switch t.To {
		case pb.SeekTarget_SEEK_TARGET_EARLIEST:
			return broker.SeekTo{Kind: broker.SeekEarliest}, "the earliest message", nil
		case pb.SeekTarget_SEEK_TARGET_LATEST:
			return broker.SeekTo{Kind: broker.SeekLatest}, "the latest message", nil
		}
		return broker.SeekTo{}, "", invalidf("seek target %s is not one of SEEK_TARGET_EARLIEST, SEEK_TARGET_LATEST", t.To)
	case *pb.SeekRequest_Time:
		if err := t.Time.CheckValid(); err != nil {
			return broker.SeekTo{}, "", invalidf("seek time is not a valid timestamp: %v", err)
		}
		at := t.Time.AsTime()
		return broker.SeekTo{Kind: broker.SeekTime, Time: at}, at.UTC().Format(time.RFC3339Nano), nil
	}
	return broker.SeekTo{}, "", invalidf("seek needs a target: to (earliest or latest) or time")
}

// Seek implements Admin.Seek (see the top of this file).
func (a *adminService) Seek(ctx context.Context, req *pb.SeekRequest) (*pb.SeekResponse, error) {
	name := req.GetSubscription()
	switch {
	case name == "":
		return nil, grpcError(invalidf("subscription is empty"))
	case len(name) > maxNameBytes:
		return nil, grpcError(invalidf("subscription name is %d bytes; at most %d", len(name), maxNameBytes))
	case !utf8.ValidString(name):
		return nil, grpcError(invalidf("subscription name is not UTF-8"))
	}
	to, where, err := seekTarget(req)
	if err != nil {
		return nil, grpcError(err)
	}
	seeker, ok := a.backend.(broker.Seeker)
	if !ok {
		return nil, grpcError(&codedError{code: codes.Unimplemented, msg: "this node's backend cannot move a subscription's positions (Seek)"})
	}
	why := "subscription moved to " + where + " by Seek"
	if req.GetLocalOnly() {
		switch req.GetPhase() {
		case seekPhaseHold, seekPhaseResume:
			a.seekLocal(ctx, name, req.GetPhase(), why)
			return &pb.SeekResponse{}, nil
		}
		return nil, grpcError(invalidf("seek phase %d is not 1 (hold) or 2 (resume)", req.GetPhase()))
	}

	shards, err := a.seekShards(ctx, name)
	if err != nil {
		return nil, grpcError(err)
	}
	a.seekEverywhere(ctx, req, seekPhaseHold, why)
	mctx, cancel := context.WithTimeout(ctx, seekMoveTimeout)
	err = seeker.Seek(mctx, name, shards, to)
	cancel()
	// Resume even when the client has gone: the holds must not wait for
	// their timeout.
	a.seekEverywhere(context.WithoutCancel(ctx), req, seekPhaseResume, why)
	if err != nil {
		return nil, grpcError(err)
	}
	resp := &pb.SeekResponse{Shards: make([]string, len(shards))}
	for i, sh := range shards {
		resp.Shards[i] = shardName(sh)
	}
	return resp, nil
}

// seekShards is every shard of the subscription's topics, which the first
// of these tells: this node's running subscription, a subscriber anywhere
// in the cluster, the stored settings, the backend's saved positions.
func (a *adminService) seekShards(ctx context.Context, name string) ([]broker.ShardID, error) {
	var topics []string
	for _, sub := range a.subs.open() {
		if sub.name == name {
			topics = sub.currentTopics()
		}
	}
	if len(topics) == 0 && a.members != nil {
		for _, st := range a.members.View().Nodes {
			for _, sub := range st.Subscriptions[name].Subscribers {
				topics = sub.Topics
			}
		}
	}
	if store, ok := a.backend.(broker.SubscriptionStore); ok && len(topics) == 0 {
		if cfg, err := store.GetSubscription(ctx, name); err == nil {
			topics = cfg.Topics
		}
	}
	if insp, ok := a.backend.(broker.Inspector); ok && len(topics) == 0 {
		saved, err := insp.Inspect(ctx, name, nil)
		if err != nil {
			return nil, err
		}
		for _, p := range saved {
			if !slices.Contains(topics, p.Shard.Topic) {
				topics = append(topics, p.Shard.Topic)
			}
		}
	}
	if len(topics) == 0 {
		return nil, notFoundf("subscription %q is not known: it has no subscribers, no stored settings and no saved positions", name)
	}
	return a.backend.Shards(ctx, sortedCopy(topics))
}

// seekEverywhere runs a phase on this node and on every other live member,
// at once, and waits for all. A member that does not answer is logged
// over: in step 1 the fences stop it, in step 3 its hold times out.
func (a *adminService) seekEverywhere(ctx context.Context, req *pb.SeekRequest, phase uint32, why string) {
	a.seekLocal(ctx, req.GetSubscription(), phase, why)
	if a.members == nil {
		return
	}
	var wg sync.WaitGroup
	for _, m := range a.members.Members() {
		if m.Name == a.cfg.NodeName || m.GRPCAddr == "" || m.State != "alive" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.seekMember(ctx, m.GRPCAddr, req, phase); err != nil {
				a.subs.log.Warn("a member did not answer a seek", "member", m.Name, "phase", phase, "subscription", req.GetSubscription(), "err", err)
			}
		}()
	}
	wg.Wait()
}

// seekMember asks another member to run a phase of a seek.
func (a *adminService) seekMember(ctx context.Context, addr string, req *pb.SeekRequest, phase uint32) error {
	ctx, cancel := context.WithTimeout(ctx, seekMemberTimeout)
	defer cancel()
	conn, err := a.peers.dial(addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = pb.NewAdminClient(conn).Seek(ctx, &pb.SeekRequest{Subscription: req.GetSubscription(), Target: req.GetTarget(), LocalOnly: true, Phase: phase})
	return err
}

// seekLocal runs a phase on this node: the hold first, so that a
// subscriber opening meanwhile claims nothing, then the running
// subscription's part, waited for so that step 2 starts only once this
// node has stopped reading.
func (a *adminService) seekLocal(ctx context.Context, name string, phase uint32, why string) {
	if phase == seekPhaseHold && ctx.Err() != nil {
		return // too late: the seek went on without this member, and no resume would lift the hold
	}
	if phase == seekPhaseHold {
		a.subs.seeks.hold(name, time.Now().Add(seekHold))
	} else {
		a.subs.seeks.lift(name)
	}
	for _, sub := range a.subs.open() {
		if sub.name != name {
			continue
		}
		kind := evSeekHold
		if phase == seekPhaseResume {
			kind = evSeekResume
		}
		done := make(chan error, 1)
		if !sub.send(ctx, event{kind: kind, reason: why, reply: done}) {
			continue
		}
		select {
		case <-done:
		case <-ctx.Done():
		case <-sub.done:
		}
	}
}
