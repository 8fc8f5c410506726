// The backend consumer's lifecycle: opened with the subscription's first
// local subscriber, closed (with a final save, dropping every buffered
// message and claim) when the last one leaves, and polled by a goroutine
// of its own (pollLoop, owned by run through pollStop and pollDone) only
// when run asks. While the backend fails, run keeps asking (hungry), tells
// every subscriber, and tells them again when a poll succeeds; the
// consumer re-subscribes failed shards itself. openConsumer, closeConsumer
// and polled run on the subscription's goroutine (run, dispatcher.go);
// prepare runs on a Subscribe stream's goroutine, before its session
// joins.

package node

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/streamgate/streamgate/broker"
)

// pollResult is what a Poll returned.
type pollResult struct {
	ds  []broker.Delivery
	err error
}

// openConsumer opens the backend consumer and starts its poller.
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
	var pause time.Duration // after failed polls: 50ms doubling to 1s
	for {
		select {
		case <-s.pollWanted:
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
		if err == nil {
			pause = 0
			continue
		}
		// The contract lets a failing Poll return at once; without a pause
		// the node would poll such a backend in a tight loop for as long
		// as the outage lasts.
		pause = min(max(2*pause, 50*time.Millisecond), time.Second)
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
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
	s.finishDeadLetters() // acks the confirmed ones before the final save
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
	case <-s.pollWanted:
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
	s.announce()
}

// polled queues what a poll fetched, dropping messages of shards this
// node no longer reads and ones it holds already, and tells subscribers
// when the backend fails and when it answers again.
func (s *subscription) polled(r pollResult) {
	if s.consumer == nil {
		return // a late result from a closed consumer
	}
	// Deliveries come in runs of one shard: its queue and whether this
	// node reads it are looked up once a run, and the messages of a poll
	// are allocated together.
	var (
		run   broker.ShardID
		q     *shardQueue
		local bool
	)
	msgs := make([]message, len(r.ds))
	added := 0
	for i := range r.ds {
		d := &r.ds[i]
		if q == nil || d.Shard != run {
			run, q, local = d.Shard, s.queue(d.Shard), s.readsLocally(d.Shard)
		}
		if !local {
			continue // moved away since the fetch; fetched again by its next reader
		}
		if s.known[d.ID] {
			continue // fetched again while queued or in flight
		}
		s.known[d.ID] = true
		s.seq++
		m := &msgs[i]
		m.d, m.seq, m.attempt = *d, s.seq, d.Attempts
		q.pending = append(q.pending, m)
		added++
	}
	s.addBuffered(added)
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

// prepare gives every shard a saved position before the first subscriber
// of this node is answered (broker.Subscriber.Prepare), once per shard.
// One Prepare runs at a time per subscription: the first subscribers of a
// new subscription often open together, and concurrent Prepares of the
// same shards would fence each other's saves (every one of them failing
// with UNAVAILABLE); the others wait, then find the shards prepared.
func (s *subscription) prepare(ctx context.Context, spec broker.SubscriptionSpec, shards []broker.ShardID) error {
	select {
	case s.prepareLock <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.prepareLock }()
	var todo []broker.ShardID
	for _, sh := range shards {
		if !s.prepared[sh] {
			todo = append(todo, sh)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	if err := s.backend.Prepare(ctx, spec, todo); err != nil {
		return err
	}
	for _, sh := range todo {
		s.prepared[sh] = true
	}
	return nil
}
