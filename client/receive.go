package client

import (
	"context"
	"errors"
	"hash/fnv"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Subscription is a subscription to receive from: the high-level consumer.
// Set ReceiveSettings before calling Receive.
type Subscription struct {
	c               *Client
	Name            string
	Topics          []string
	ReceiveSettings ReceiveSettings
}

// ReceiveSettings tune Receive. The zero value is ready to use.
type ReceiveSettings struct {
	// FromBeginning starts a subscription that has no position yet at the
	// earliest message (default: messages published from now on).
	FromBeginning bool
	// MaxOutstanding is how many messages the client holds un-acked at
	// once, handlers running and waiting included; the server stops
	// delivering at it. 0: the server's limit (--max-unacked).
	MaxOutstanding int
	// NumGoroutines is how many handlers run at once. Default 10.
	NumGoroutines int
	// Unordered lets handlers run messages of one shard at the same time.
	// By default one shard's messages are handled one after another, in
	// the shard's order, and shards run in parallel.
	Unordered bool
	// AckBatchDelay and AckBatchSize coalesce acks and nacks: a batch is
	// sent when it holds AckBatchSize ids or its first id has waited
	// AckBatchDelay. Defaults 5 ms and 500.
	AckBatchDelay time.Duration
	AckBatchSize  int
	// MinBackoff and MaxBackoff bound the wait between attempts to open a
	// stream after one broke; each wait doubles, with jitter. Defaults
	// 100 ms and 5 s.
	MinBackoff, MaxBackoff time.Duration
	// MaxExtension is how long after its delivery Receive keeps extending
	// a message's ack deadline while it waits for a handler or is handled
	// (ModifyAckDeadline, sent before each deadline passes), so a slow
	// handler is not cut off. Past it, the message expires as the server's
	// ack deadline says. Default 60 minutes; negative turns extension off.
	MaxExtension time.Duration
	// OpenTimeout and CloseTimeout: see SubscribeOptions.
	OpenTimeout, CloseTimeout time.Duration
	// ConfirmAcks opens streams with confirm_acks, for
	// Delivery.AckWithResult (see SubscribeOptions.ConfirmAcks).
	ConfirmAcks bool
	// OnNotice is called (from Receive's goroutine; do not block) with every
	// notice the server sends. Default: logged.
	OnNotice func(Notice)
	// OnOpen is called (from Receive's goroutine) each time a stream opens,
	// the first one included.
	OnOpen func(Opened)
	// OnReconnect is called (from Receive's goroutine) each time a stream
	// opens after one broke or failed to open. Default: logged.
	OnReconnect func(Reconnect)
	// Logger gets reconnects and notices when no callback takes them.
	// Default slog.Default().
	Logger *slog.Logger
}

// Opened describes a stream the server opened.
type Opened struct {
	SubscriberID string
	Node         string        // the node serving it
	MaxUnacked   uint32        // the limit in force
	AckDeadline  time.Duration // a message's ack deadline unless extended
}

// Reconnect describes a stream opened after the previous one broke.
type Reconnect struct {
	From     string // the node whose stream broke ("" if none had opened)
	To       string // the node serving the new stream
	Err      error  // why the previous stream ended, or why opening failed
	Attempts int    // opens tried before this one succeeded
	// Dropped is how many messages of the broken stream had not had their
	// ack or nack reach the server: they are delivered again, and acking
	// them through their old Delivery does nothing.
	Dropped int
}

// Delivery is one message given to a Receive handler. Call Ack once it is
// handled, or Nack to have it delivered again. Receive extends the ack
// deadline of a message not yet acked for up to MaxExtension; one left
// un-acked longer is delivered again once its deadline passes, and counts
// against MaxOutstanding until then.
type Delivery struct {
	Received
	sess    *rsession
	settled atomic.Bool
}

// Ack acks the message. Only the first Ack or Nack counts.
func (m *Delivery) Ack() { m.settle(false) }

// Nack hands the message back to be delivered again, before anything later
// in its shard. Only the first Ack or Nack counts.
func (m *Delivery) Nack() { m.settle(true) }

// NackWithDelay hands the message back to be delivered again no sooner
// than delay from now (at most MaxNackDelay); the rest of its shard waits
// behind it. Only the first Ack or Nack counts.
func (m *Delivery) NackWithDelay(delay time.Duration, reason string) {
	if m.sess == nil || !m.settled.CompareAndSwap(false, true) {
		return
	}
	m.sess.nackDelayed(m.ID, delay, reason)
}

func (m *Delivery) settle(nack bool) {
	if m.sess == nil || !m.settled.CompareAndSwap(false, true) {
		return
	}
	m.sess.add(m.ID, nack)
}

// Subscription returns a handle on the named subscription of topics.
func (c *Client) Subscription(name string, topics ...string) *Subscription {
	return &Subscription{c: c, Name: name, Topics: topics}
}

// Receive calls f for every message until ctx ends or a terminal error,
// which it returns. It moves to another node when its stream breaks (the
// node died or drained, the connection failed) and goes on there: messages
// not acked on the broken stream are delivered again. It returns the error
// when the server refuses the open (unknown topic, a topic set that
// conflicts with the subscription's, a bad name) or ends the stream
// because a message stayed un-acked past its ack deadline, which Receive
// extends for up to MaxExtension (DeadlineExceeded).
//
// When ctx ends, Receive stops handing out messages, waits for the
// handlers running, sends their acks and closes the stream gracefully, so
// nothing acked is delivered again; then it returns nil. Messages queued
// but not started are not acked and go to other subscribers.
//
// f runs on up to NumGoroutines goroutines at once; by default the
// messages of one shard reach f one at a time, in order.
func (s *Subscription) Receive(ctx context.Context, f func(context.Context, *Delivery)) error {
	r := newReceiver(ctx, s, f)
	defer r.stopWorkers()
	var (
		from     string
		lastErr  error
		dropped  int
		attempts int
		bo       = backoff{min: r.set.MinBackoff, max: r.set.MaxBackoff}
	)
	for {
		attempts++
		// The stream outlives ctx, so that Receive can close it gracefully
		// after ctx ends; ctx aborts only the open.
		sctx, scancel := context.WithCancel(context.WithoutCancel(ctx))
		stopOpen := context.AfterFunc(ctx, scancel)
		sub, err := s.c.Subscribe(sctx, SubscribeOptions{
			Subscription: s.Name, Topics: s.Topics, FromBeginning: r.set.FromBeginning,
			MaxUnacked: uint32(r.set.MaxOutstanding), OpenTimeout: r.set.OpenTimeout, CloseTimeout: r.set.CloseTimeout,
			ConfirmAcks: r.set.ConfirmAcks,
		})
		if !stopOpen() {
			if err == nil {
				_ = sub.Close()
			}
			scancel()
			return nil
		}
		if err != nil {
			scancel()
			if ctx.Err() != nil {
				return nil
			}
			if refused(err) {
				return err
			}
			lastErr = err
			r.set.Logger.Warn("streamgate: cannot open a stream; retrying", "subscription", s.Name, "err", err, "attempt", attempts)
			if !bo.wait(ctx) {
				return nil
			}
			continue
		}
		if r.set.OnOpen != nil {
			r.set.OnOpen(Opened{SubscriberID: sub.ID, Node: sub.Node, MaxUnacked: sub.MaxUnacked, AckDeadline: sub.AckDeadline})
		}
		if lastErr != nil {
			r.reconnected(Reconnect{From: from, To: sub.Node, Err: lastErr, Attempts: attempts, Dropped: dropped})
		}
		attempts, dropped = 0, 0
		opened := time.Now()
		sess := newRSession(sub, r.set)
		err = r.serve(ctx, sess)
		if ctx.Err() != nil {
			r.stopWorkers() // handlers finish and ack
			err := sess.close()
			scancel()
			return err
		}
		dropped = sess.breakOff()
		scancel()
		from, lastErr = sub.Node, err
		if errors.Is(err, io.EOF) {
			lastErr = status.Error(codes.Unavailable, "the server ended the stream")
		} else if terminal(err) {
			return err
		}
		if time.Since(opened) > 10*time.Second {
			bo.reset()
		}
		r.set.Logger.Warn("streamgate: stream broke; reconnecting", "subscription", s.Name, "node", from, "err", lastErr, "dropped", dropped)
		if !bo.wait(ctx) {
			return nil
		}
	}
}

// refused tells an open the server refused for good from one worth trying
// again elsewhere.
func refused(err error) bool {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.NotFound, codes.FailedPrecondition, codes.AlreadyExists,
		codes.PermissionDenied, codes.Unauthenticated, codes.Unimplemented, codes.OutOfRange:
		return true
	}
	return false
}

// terminal tells a stream's end that Receive returns from one it
// reconnects after: a refusal, or the ack timeout (the handler is too slow;
// reconnecting would hide it).
func terminal(err error) bool {
	return refused(err) || status.Code(err) == codes.DeadlineExceeded
}

// receiver runs one Receive: the handler goroutines, which outlive
// streams so that a shard's redelivered messages queue behind the ones of
// the broken stream still running.
type receiver struct {
	s        *Subscription
	set      ReceiveSettings
	f        func(context.Context, *Delivery)
	queues   []chan []*Delivery // per handler goroutine, a part of a batch per entry
	next     int                // unordered: the queue of the next message
	workers  sync.WaitGroup
	stopping atomic.Bool // handlers start nothing more
	stopOnce sync.Once
	hctx     context.Context
	hcancel  context.CancelFunc
}

func newReceiver(ctx context.Context, s *Subscription, f func(context.Context, *Delivery)) *receiver {
	set := s.ReceiveSettings
	if set.NumGoroutines <= 0 {
		set.NumGoroutines = 10
	}
	if set.AckBatchSize <= 0 {
		set.AckBatchSize = 500
	}
	set.AckBatchDelay = orDefault(set.AckBatchDelay, 5*time.Millisecond)
	set.MinBackoff = orDefault(set.MinBackoff, 100*time.Millisecond)
	if set.MaxExtension == 0 {
		set.MaxExtension = 60 * time.Minute
	}
	set.MaxBackoff = orDefault(set.MaxBackoff, 5*time.Second)
	if set.Logger == nil {
		set.Logger = slog.Default()
	}
	// The server has at most max_unacked messages out; a queue of that
	// many entries (each at least one message) never holds up the others.
	depth := set.MaxOutstanding
	if depth <= 0 {
		depth = 1000
	}
	r := &receiver{s: s, set: set, f: f, queues: make([]chan []*Delivery, set.NumGoroutines)}
	r.hctx, r.hcancel = context.WithCancel(ctx)
	for i := range r.queues {
		q := make(chan []*Delivery, depth)
		r.queues[i] = q
		r.workers.Add(1)
		go r.work(q)
	}
	return r
}

// work runs the handler on a queue's messages, skipping those whose stream
// broke (they come back) and, once stopping, all that did not start.
func (r *receiver) work(q chan []*Delivery) {
	defer r.workers.Done()
	for batch := range q {
		for _, m := range batch {
			if r.stopping.Load() {
				break
			}
			select {
			case <-m.sess.dead:
				continue
			default:
			}
			r.f(r.hctx, m)
		}
	}
}

// stopWorkers lets the running handlers finish and waits for them; queued
// messages are not started.
func (r *receiver) stopWorkers() {
	r.stopOnce.Do(func() {
		r.stopping.Store(true)
		r.hcancel()
		for _, q := range r.queues {
			close(q)
		}
		r.workers.Wait()
	})
}

// serve hands a stream's messages to the handlers until it ends or ctx
// does.
func (r *receiver) serve(ctx context.Context, sess *rsession) error {
	for {
		msgs, notice, err := sess.sub.RecvContext(ctx)
		if err != nil {
			return err
		}
		if notice != nil {
			r.notice(*notice)
			continue
		}
		// One queue entry per handler goroutine and batch, not per message.
		parts := make(map[int][]*Delivery, len(r.queues))
		order := make([]int, 0, len(r.queues))
		for _, m := range msgs {
			i := r.queue(m.Shard)
			if _, ok := parts[i]; !ok {
				order = append(order, i)
			}
			parts[i] = append(parts[i], &Delivery{Received: m, sess: sess})
		}
		sess.delivered.Add(int64(len(msgs)))
		sess.track(msgs)
		for _, i := range order {
			select {
			case r.queues[i] <- parts[i]:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
}

// queue picks a message's queue: by shard, so one shard's messages run in
// order, unless Unordered.
func (r *receiver) queue(shard string) int {
	if r.set.Unordered {
		r.next = (r.next + 1) % len(r.queues)
		return r.next
	}
	h := fnv.New32a()
	h.Write([]byte(shard))
	return int(h.Sum32() % uint32(len(r.queues)))
}

func (r *receiver) notice(n Notice) {
	if r.set.OnNotice != nil {
		r.set.OnNotice(n)
		return
	}
	level := slog.LevelWarn
	if n.Code == codes.OK {
		level = slog.LevelInfo
	}
	r.set.Logger.Log(context.Background(), level, "streamgate: notice", "subscription", r.s.Name,
		"code", n.Code.String(), "message", n.Message, "terminal", n.Terminal)
}

func (r *receiver) reconnected(rc Reconnect) {
	if r.set.OnReconnect != nil {
		r.set.OnReconnect(rc)
		return
	}
	r.set.Logger.Info("streamgate: reconnected", "subscription", r.s.Name, "from", rc.From, "to", rc.To,
		"err", rc.Err, "attempts", rc.Attempts, "dropped", rc.Dropped)
}
