package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/rabbitmq/rabbitmq-stream-go-client/pkg/amqp"
	"github.com/rabbitmq/rabbitmq-stream-go-client/pkg/stream"

	"github.com/streamgate/streamgate/broker"
	"github.com/streamgate/streamgate/broker/cursor"
)

var (
	_ broker.Subscriber = (*Broker)(nil)
	_ broker.Consumer   = (*consumer)(nil)
)

type partPhase int

const (
	phaseLoading  partPhase = iota // claiming the fence, reading the position
	phaseFetching                  // subscribed (or about to be) at the stream
	phasePaused                    // too much unsaved: unsubscribed until saves drain it
	phaseFailed                    // the subscription broke: subscribed again at retryAt
	phaseStopped                   // no longer read: still takes acks until Release
)

type shardState struct {
	phase    partPhase
	tr       *cursor.Tracker // nil while loading
	resolved bool            // tr's offsets are real: a message was read or a position saved
	origin   cursor.Origin
	holder   string // the claim this reader saves under (the fence)
	n        uint64 // saves made under holder
	// gen changes whenever reading stops or restarts at a position of
	// ours: the handler drops messages of an older subscription.
	gen         uint64
	sc          *stream.Consumer // the subscription of generation scGen; nil when none
	scGen       uint64
	subscribing bool
	buf         []broker.Delivery // read and not polled yet
	ids         map[string]int64  // tagged id -> offset, for fetched messages not acked
	retryAt     time.Time
	fails       int
	release     bool
	loading     bool
	saving      bool
	reload      bool
	unsaved     bool   // the position was chosen here and is not saved yet
	seq         uint64 // changes with everything a save writes
	savedSeq    uint64 // seq as of the last save: delivery counts changed since when it differs

	saves cursor.SaveWatch // for SaveAcks (confirm.go)
}

// consumer implements broker.Consumer.
//
// One goroutine (manage) loads shards (claim, position), opens and closes
// stream subscriptions and saves on a timer; the client's dispatch
// goroutines call handle, which only appends under mu and never blocks;
// Poll runs on the caller's goroutine; the rest on any. They share parts
// under mu; requests to the server are made without it.
type consumer struct {
	b    *Broker
	spec broker.SubscriptionSpec
	log  *slog.Logger

	mu       sync.Mutex // guards the fields below
	parts    map[posKey]*shardState
	assigned map[posKey]bool    // what Assign last gave
	orphans  []*stream.Consumer // subscriptions to close (manage closes them)
	acks     int
	lastErr  error
	closed   bool
	rr       int // Poll's starting shard, for fairness
	events   map[posKey]broker.ShardEvent
	eventSig chan struct{}
	dataSig  chan struct{} // capacity 1: a buffer has something
	savedSig chan struct{} // closed after a save when SaveAcks waits (confirm.go); nil when none does

	kick      chan struct{}
	commitNow chan struct{}
	cancel    context.CancelFunc
	wg        sync.WaitGroup // manage and the subscriptions' close watchers
}

// Consume implements broker.Subscriber: stream subscriptions per shard,
// positions in the store under the subscription's name.
func (b *Broker) Consume(_ context.Context, spec broker.SubscriptionSpec) (broker.Consumer, error) {
	c := &consumer{
		b:         b,
		spec:      spec,
		log:       b.cfg.log().With("subscription", spec.Name),
		parts:     map[posKey]*shardState{},
		assigned:  map[posKey]bool{},
		events:    map[posKey]broker.ShardEvent{},
		eventSig:  make(chan struct{}, 1),
		dataSig:   make(chan struct{}, 1),
		kick:      make(chan struct{}, 1),
		commitNow: make(chan struct{}, 1),
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, broker.ErrClosed
	}
	b.consumers[c] = true
	b.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.manage(ctx)
	}()
	return c, nil
}

func (c *consumer) key(s broker.ShardID) posKey { return posKey{c.spec.Name, s.Topic, s.Index} }

func shardOf(k posKey) broker.ShardID { return broker.ShardID{Topic: k.topic, Index: k.index} }

// Assign implements broker.Consumer.
func (c *consumer) Assign(shards []broker.ShardID) {
	want := make(map[posKey]bool, len(shards))
	for _, s := range shards {
		want[c.key(s)] = true
	}
	c.mu.Lock()
	c.assigned = want
	for k, ps := range c.parts {
		if want[k] || ps.phase == phaseStopped {
			continue
		}
		ps.phase = phaseStopped
		c.stopReadingLocked(ps)
	}
	c.mu.Unlock()
	signal(c.kick)
}

// stopReadingLocked ends the shard's subscription (manage closes it) and
// drops what was read and not polled; the tracker takes it again from its
// position when reading restarts.
func (c *consumer) stopReadingLocked(ps *shardState) {
	ps.gen++
	if ps.sc != nil {
		c.orphans = append(c.orphans, ps.sc)
		ps.sc = nil
	}
	ps.buf = nil
	if ps.tr != nil && ps.resolved {
		ps.tr.Rewind()
	}
}

// handle takes one message from a stream subscription. It runs on the
// client's dispatch goroutine and never blocks: at the shard's limit it
// drops the message and pauses the shard (read again from its position).
func (c *consumer) handle(k posKey, gen uint64, offset int64, m *amqp.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ps := c.parts[k]
	if ps == nil || ps.gen != gen || ps.phase != phaseFetching || ps.tr == nil {
		return
	}
	if !ps.resolved {
		ps.tr = cursor.NewTracker(offset, cursor.Saved{Origin: ps.origin})
		ps.resolved = true
	}
	if ps.tr.Full(c.b.cfg.MaxBufferedPerShard) && offset >= ps.tr.Next() {
		// At the limit: stop reading after what the tracker has taken,
		// keeping what is buffered (it counts in the limit and is still
		// good); reading resumes at tr.Next() once saves drained it to half
		// (reconcile).
		ps.phase = phasePaused
		ps.gen++
		if ps.sc != nil {
			c.orphans = append(c.orphans, ps.sc)
			ps.sc = nil
		}
		signal(c.kick)
		signal(c.commitNow)
		return
	}
	deliver, prior := ps.tr.Fetched(offset)
	if !deliver {
		return
	}
	s := shardOf(k)
	d := broker.Delivery{Shard: s, Message: broker.Message{Topic: k.topic}, Attempts: prior}
	var body []byte
	for _, part := range m.Data {
		body = append(body, part...)
	}
	if m.Properties != nil && m.Properties.ContentType == envelopeType {
		tagged, at, err := decodeEnvelope(body, &d.Message)
		if err == nil {
			d.ID, d.PublishTime = encodeTaggedID(s, tagged), at
			if ps.ids == nil {
				ps.ids = map[string]int64{}
			}
			ps.ids[tagged] = offset
		}
	}
	if d.ID == "" { // another client's message
		d.Message = broker.Message{Topic: k.topic, Payload: body}
		d.ID = encodeOffsetID(s, offset)
		if m.Properties != nil {
			d.PublishTime = m.Properties.CreationTime
		}
	}
	ps.buf = append(ps.buf, d)
	signal(c.dataSig)
}

// Poll implements broker.Consumer.
func (c *consumer) Poll(ctx context.Context, max int) ([]broker.Delivery, error) {
	timer := time.NewTimer(time.Second)
	defer timer.Stop()
	for {
		c.mu.Lock()
		out := c.takeLocked(max)
		err := c.healthLocked()
		c.mu.Unlock()
		if len(out) > 0 || err != nil {
			return out, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
			return nil, nil
		case <-c.dataSig:
		}
	}
}

// takeLocked takes up to max buffered deliveries, shards in turn.
func (c *consumer) takeLocked(max int) []broker.Delivery {
	var out []broker.Delivery
	var keys []posKey
	for k, ps := range c.parts {
		if len(ps.buf) > 0 {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	c.rr++
	per := (max + len(keys) - 1) / len(keys)
	for i := range keys {
		ps := c.parts[keys[(i+c.rr)%len(keys)]]
		n := min(per, len(ps.buf), max-len(out))
		out = append(out, ps.buf[:n]...)
		ps.buf = ps.buf[n:]
		if len(ps.buf) == 0 {
			ps.buf = nil
		}
	}
	if len(out) < max {
		for _, k := range keys {
			ps := c.parts[k]
			n := min(len(ps.buf), max-len(out))
			out = append(out, ps.buf[:n]...)
			ps.buf = ps.buf[n:]
		}
	}
	return out
}

// healthLocked: reading works when no wanted shard waits to be subscribed
// again or failed to load, and the positions store is up.
func (c *consumer) healthLocked() error {
	for _, ps := range c.parts {
		if ps.phase == phaseFailed || (ps.phase == phaseLoading && ps.fails > 0) {
			return fmt.Errorf("%w: %w", broker.ErrUnavailable, c.lastErr)
		}
	}
	if len(c.parts) > 0 {
		if err := c.b.store.health(); err != nil {
			return err
		}
	}
	return nil
}

// lookup finds the offset an id names in a shard this consumer holds.
func (c *consumer) lookupLocked(id string) (*shardState, int64, bool) {
	r, err := decodeID(id)
	if err != nil {
		return nil, 0, false
	}
	ps := c.parts[c.key(r.shard)]
	if ps == nil || ps.tr == nil {
		return nil, 0, false
	}
	if r.foreign {
		return ps, r.offset, true
	}
	o, ok := ps.ids[r.tagged]
	return ps, o, ok
}

// Ack implements broker.Consumer.
func (c *consumer) Ack(ids ...string) {
	commit := false
	c.mu.Lock()
	for _, id := range ids {
		ps, o, ok := c.lookupLocked(id)
		if !ok || !ps.tr.Ack(o) {
			continue
		}
		if r, err := decodeID(id); err == nil && !r.foreign {
			delete(ps.ids, r.tagged)
		}
		ps.seq++
		c.acks++
		if c.acks >= c.b.cfg.SaveEvery {
			commit = true
		}
		if ps.phase == phasePaused {
			if o, _ := ps.tr.SavePoint(); ps.tr.Next()-o <= int64(c.b.cfg.MaxBufferedPerShard/2) {
				commit = true
			}
		}
	}
	c.mu.Unlock()
	if commit {
		signal(c.commitNow)
	}
}

// Delivered implements broker.Consumer.
func (c *consumer) Delivered(ids ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		if ps, o, ok := c.lookupLocked(id); ok && ps.tr.Delivered(o) {
			ps.seq++
		}
	}
}

// Abandon implements broker.Consumer.
func (c *consumer) Abandon(shards []broker.ShardID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range shards {
		k := c.key(s)
		c.forgetLocked(k)
		delete(c.events, k)
	}
	c.savedLocked() // a SaveAcks waiting for these shards' saves: they are void now
}

// forgetLocked drops a shard: no more reading, saving or acks, and it is
// not loaded again (taking the fence from its new reader) until the node
// assigns it anew.
func (c *consumer) forgetLocked(k posKey) {
	delete(c.assigned, k)
	if ps := c.parts[k]; ps != nil {
		c.stopReadingLocked(ps)
		delete(c.parts, k)
		signal(c.kick)
	}
}

func (c *consumer) eventLocked(k posKey, kind broker.ShardEventKind, reason string) {
	c.events[k] = broker.ShardEvent{Shard: shardOf(k), Kind: kind, Reason: reason}
	signal(c.eventSig)
	c.savedLocked() // a SaveAcks waiting for the shard: lost or reset, its acks are void
}

// Events implements broker.Consumer.
func (c *consumer) Events() <-chan struct{} { return c.eventSig }

// TakeEvents implements broker.Consumer.
func (c *consumer) TakeEvents() []broker.ShardEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]broker.ShardEvent, 0, len(c.events))
	for _, ev := range c.events {
		out = append(out, ev)
	}
	clear(c.events)
	return out
}

// errNotStanding: the node's standing is in doubt, so nothing is saved.
var errNotStanding = errors.New("not saving: this node's membership of the cluster is in doubt")

// errSaveInFlight: what was asked is being saved by another call already.
var errSaveInFlight = fmt.Errorf("a save of these positions is in flight: %w", cursor.ErrBusy)

// errAborted: the backend was aborted (a crash, for tests).
var errAborted = errors.New("the backend was aborted")

// errFenced: another reader claimed the shard.
var errFenced = errors.New("fenced: another reader has the shard")
