package node_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/streamgate/streamgate/broker"
	"github.com/streamgate/streamgate/node"
)

// fakeBackend is an in-memory, deterministic node.Backend for dispatcher
// tests: a topic is a slice of shards, a shard a slice of messages (the
// offset is the index), and a subscription has one saved position per
// shard. Nothing happens on its own: there is no periodic save (SaveAll is
// the test's stand-in for it), no fetch delay, no retention. A Poll returns
// as soon as something is fetchable, the injected poll error changes, or
// pollWait passes.
//
// Everything, its consumers included, is guarded by one mutex: the fake
// favours obviously right over fast. The only goroutine it starts calls
// Publish's done callbacks, in Publish order (the contract wants them on a
// goroutine of the backend's); Close stops it.
type fakeBackend struct {
	pollWait time.Duration // how long an idle Poll waits; the contract says about a second

	mu sync.Mutex // guards the fields below, and every consumer's state
	// maxPerShard is the consumers' per-shard limit of messages fetched
	// and not saved (0: none). A shard at the limit is fetched again once
	// a save lowers it; an ack on such a shard saves it at once (as the
	// Kafka backend saves a paused partition early).
	maxPerShard int64
	topics      map[string][][]fakeEntry
	rr          map[string]int // next shard of an unkeyed message, by topic
	saved       map[fakeKey]*fakeSaved
	clock       uint64                 // counts appends; an entry's tick orders it among all shards
	created     map[string]uint64      // the clock when a subscription was first prepared
	consumers   map[*fakeConsumer]bool // open ones
	opened      int                    // Consume calls that returned a consumer
	pollErr     error
	errAtOnce   bool // every Poll returns pollErr at once, not only the first
	polls       int  // Poll calls
	pingErr     error
	changed     chan struct{} // closed and replaced by wakeLocked: idle Polls look again
	delivered   []string      // ids the node reported delivered (known ones), in order
	acked       []string      // ids the node acked that counted, in order
	closed      bool
	results     []func()      // done callbacks not called yet, in order
	publishGate chan struct{} // non-nil: Publish waits until it is closed (a hand-off that takes long)
	publishing  int           // Publish calls waiting at publishGate
	resultSig   chan struct{} // capacity 1: results has something
	stop        chan struct{}
	wg          sync.WaitGroup
}

var (
	_ node.Backend    = (*fakeBackend)(nil)
	_ broker.Consumer = (*fakeConsumer)(nil)
)

type fakeEntry struct {
	msg  broker.Message
	at   time.Time
	tick uint64
}

type fakeKey struct {
	sub   string
	shard broker.ShardID
}

// fakeSaved is what the backend keeps of one subscription on one shard.
type fakeSaved struct {
	pos   fakePosition
	fence uint64 // the latest reader's; saves with an older one fail
}

// fakePosition is a saved position: every message before Next is acked,
// Acked lists the acked offsets above it, Attempts counts the deliveries of
// the un-acked messages at or after Next (as the Kafka backend keeps them
// in its commit metadata).
type fakePosition struct {
	Next     int64
	Acked    []int64
	Attempts map[int64]uint32
}

func (p fakePosition) clone() fakePosition {
	return fakePosition{Next: p.Next, Acked: slices.Clone(p.Acked), Attempts: maps.Clone(p.Attempts)}
}

// newFakeBackend makes a backend with topics of the given shard counts.
// The caller closes it after the node has stopped.
func newFakeBackend(topics map[string]int) *fakeBackend {
	b := &fakeBackend{
		pollWait:  100 * time.Millisecond,
		topics:    map[string][][]fakeEntry{},
		rr:        map[string]int{},
		saved:     map[fakeKey]*fakeSaved{},
		created:   map[string]uint64{},
		consumers: map[*fakeConsumer]bool{},
		changed:   make(chan struct{}),
		resultSig: make(chan struct{}, 1),
		stop:      make(chan struct{}),
	}
	for t, n := range topics {
		b.topics[t] = make([][]fakeEntry, n)
	}
	b.wg.Add(1)
	go b.callResults()
	return b
}

// Close stops the fake: pending publish results are delivered first.
func (b *fakeBackend) Close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	b.mu.Unlock()
	close(b.stop)
	b.wg.Wait()
}

// wakeLocked tells idle Polls to look again.
func (b *fakeBackend) wakeLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// ---- what the test drives and reads ----

// Append adds messages with these payloads to one shard, at once (one
// Poll sees all or none of them).
func (b *fakeBackend) Append(topic string, shard int32, payloads ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range payloads {
		b.appendLocked(topic, shard, broker.Message{Topic: topic, Payload: []byte(p)})
	}
	b.wakeLocked()
}

// Fill adds n messages to every shard of topic, at once, with the payload
// "<shard>:<seq>", seq counting the shard's messages from 0.
func (b *fakeBackend) Fill(topic string, n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, log := range b.topics[topic] {
		for seq := len(log); seq < len(log)+n; seq++ {
			b.appendLocked(topic, int32(i), broker.Message{Topic: topic, Payload: fmt.Appendf(nil, "%d:%d", i, seq)})
		}
	}
	b.wakeLocked()
}

func (b *fakeBackend) appendLocked(topic string, shard int32, m broker.Message) {
	b.clock++
	b.topics[topic][shard] = append(b.topics[topic][shard], fakeEntry{msg: m, at: time.Now(), tick: b.clock})
}

// SetPollError makes every Poll fail with err (wrapped in
// broker.ErrUnavailable) until it is called with nil. The first failing
// Poll returns at once, later ones after pollWait, as a client that waits
// for data does.
func (b *fakeBackend) SetPollError(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pollErr, b.errAtOnce = err, false
	b.wakeLocked()
}

// SetPollErrorAtOnce is SetPollError where every Poll returns the error at
// once, as a backend whose client fails fast does (the contract says Poll
// waits up to about a second for messages, not that it waits while
// failing).
func (b *fakeBackend) SetPollErrorAtOnce(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pollErr, b.errAtOnce = err, true
	b.wakeLocked()
}

// Polls counts Poll calls.
func (b *fakeBackend) Polls() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.polls
}

// SetPingError makes Ping fail with err until it is called with nil.
func (b *fakeBackend) SetPingError(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pingErr = err
}

// Saved returns the subscription's saved position on a shard.
func (b *fakeBackend) Saved(sub, topic string, shard int32) (fakePosition, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	sv := b.saved[fakeKey{sub, broker.ShardID{Topic: topic, Index: shard}}]
	if sv == nil {
		return fakePosition{}, false
	}
	return sv.pos.clone(), true
}

// OpenConsumers counts consumers not closed yet; Opened counts them all.
func (b *fakeBackend) OpenConsumers() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.consumers)
}

func (b *fakeBackend) Opened() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.opened
}

// Delivered and Acked return the ids the node reported delivered (one per
// delivery) and acked, in order, ignored ones left out.
func (b *fakeBackend) Delivered() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.delivered)
}

func (b *fakeBackend) Acked() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.acked)
}

// Steal makes another reader take a shard's fence: the current reader's
// next save of it fails and it reports ShardLost.
func (b *fakeBackend) Steal(sub, topic string, shard int32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.savedLocked(fakeKey{sub, broker.ShardID{Topic: topic, Index: shard}}, broker.StartEarliest).fence++
}

// SaveAll is the periodic save: every open consumer saves every shard it
// holds; a shard whose save is fenced is forgotten and reported lost.
func (b *fakeBackend) SaveAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for c := range b.consumers {
		for sh, r := range c.reads {
			c.saveOrLoseLocked(sh, r)
		}
	}
	b.wakeLocked()
}

// savedLocked returns the saved state of key, making it at start when the
// subscription has none there. A subscription that starts at the latest
// starts a shard prepared late (one added to the topic since) at its first
// message published after the subscription was created, so that nothing
// published after the first subscriber was answered is skipped (the Kafka
// backend does the same with offsets by time).
func (b *fakeBackend) savedLocked(key fakeKey, start broker.StartPosition) *fakeSaved {
	sv := b.saved[key]
	if sv == nil {
		sv = &fakeSaved{}
		if start == broker.StartLatest {
			log := b.topics[key.shard.Topic][key.shard.Index]
			created, ok := b.created[key.sub]
			if !ok {
				created = b.clock
			}
			sv.pos.Next = int64(len(log))
			for i, e := range log {
				if e.tick > created {
					sv.pos.Next = int64(i)
					break
				}
			}
		}
		b.saved[key] = sv
	}
	return sv
}

// AddShards adds n shards to a topic, as Kafka can add partitions.
func (b *fakeBackend) AddShards(topic string, n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.topics[topic] = append(b.topics[topic], make([][]fakeEntry, n)...)
}

// SetShardLimit sets the consumers' per-shard limit (see maxPerShard).
func (b *fakeBackend) SetShardLimit(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.maxPerShard = n
	b.wakeLocked()
}

// Reading counts the shards the open consumers of sub fetch.
func (b *fakeBackend) Reading(sub string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for c := range b.consumers {
		if c.spec.Name != sub {
			continue
		}
		for _, r := range c.reads {
			if r.assigned {
				n++
			}
		}
	}
	return n
}

// ---- broker.Publisher and broker.Pinger ----

// Publish appends at once; done runs on the fake's goroutine. Keyed
// messages go to the shard of their key's hash, unkeyed ones round-robin.
// After Close, done runs on the caller's goroutine: the node has stopped,
// so nobody holds a lock that done could need.
func (b *fakeBackend) Publish(ctx context.Context, msg *broker.Message, done func(broker.PublishResult)) {
	b.mu.Lock()
	if gate := b.publishGate; gate != nil {
		b.publishing++
		b.mu.Unlock()
		<-gate
		b.mu.Lock()
		b.publishing--
	}
	res := b.publishLocked(ctx, msg)
	if b.closed {
		b.mu.Unlock()
		done(res)
		return
	}
	b.results = append(b.results, func() { done(res) })
	b.mu.Unlock()
	signalFake(b.resultSig)
}

func (b *fakeBackend) publishLocked(ctx context.Context, msg *broker.Message) broker.PublishResult {
	shards, ok := b.topics[msg.Topic]
	switch {
	case b.closed:
		return broker.PublishResult{Err: broker.ErrClosed}
	case ctx.Err() != nil:
		return broker.PublishResult{Err: fmt.Errorf("%w: %w", broker.ErrUnavailable, ctx.Err())}
	case !ok:
		return broker.PublishResult{Err: fmt.Errorf("%w: %q", broker.ErrTopicNotFound, msg.Topic)}
	}
	var i int
	if len(msg.Key) > 0 {
		h := fnv.New32a()
		_, _ = h.Write(msg.Key)
		i = int(h.Sum32() % uint32(len(shards)))
	} else {
		i = b.rr[msg.Topic] % len(shards)
		b.rr[msg.Topic]++
	}
	m := *msg
	m.Key, m.Payload, m.Headers = slices.Clone(m.Key), slices.Clone(m.Payload), slices.Clone(m.Headers)
	sh := broker.ShardID{Topic: msg.Topic, Index: int32(i)}
	off := int64(len(shards[i]))
	b.appendLocked(msg.Topic, sh.Index, m)
	b.wakeLocked()
	return broker.PublishResult{ID: fakeID(sh, off)}
}

// callResults calls done callbacks in order until Close, then the rest.
func (b *fakeBackend) callResults() {
	defer b.wg.Done()
	for {
		stopping := false
		select {
		case <-b.resultSig:
		case <-b.stop:
			stopping = true
		}
		b.mu.Lock()
		fs := b.results
		b.results = nil
		b.mu.Unlock()
		for _, f := range fs {
			f()
		}
		if stopping {
			return
		}
	}
}

func (b *fakeBackend) Ping(context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pingErr != nil {
		return fmt.Errorf("%w: %w", broker.ErrUnavailable, b.pingErr)
	}
	return nil
}

// ---- broker.Subscriber ----

func (b *fakeBackend) Shards(_ context.Context, topics []string) ([]broker.ShardID, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []broker.ShardID
	for _, t := range topics {
		shards, ok := b.topics[t]
		if !ok {
			return nil, fmt.Errorf("%w: %q", broker.ErrTopicNotFound, t)
		}
		for i := range shards {
			out = append(out, broker.ShardID{Topic: t, Index: int32(i)})
		}
	}
	return out, nil
}

// Prepare gives every shard without a saved position the spec's start.
func (b *fakeBackend) Prepare(_ context.Context, spec broker.SubscriptionSpec, shards []broker.ShardID) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, sh := range shards {
		if int(sh.Index) >= len(b.topics[sh.Topic]) {
			return fmt.Errorf("%w: %s/%d", broker.ErrTopicNotFound, sh.Topic, sh.Index)
		}
	}
	if _, ok := b.created[spec.Name]; !ok {
		b.created[spec.Name] = b.clock
	}
	for _, sh := range shards {
		b.savedLocked(fakeKey{spec.Name, sh}, spec.Start)
	}
	return nil
}

func (b *fakeBackend) Consume(_ context.Context, spec broker.SubscriptionSpec) (broker.Consumer, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, broker.ErrClosed
	}
	c := &fakeConsumer{b: b, spec: spec, reads: map[broker.ShardID]*fakeRead{},
		events: map[broker.ShardID]broker.ShardEvent{}, eventSig: make(chan struct{}, 1)}
	b.consumers[c] = true
	b.opened++
	return c, nil
}

// ---- broker.Consumer ----

// fakeConsumer reads one subscription. Its state is guarded by b.mu.
type fakeConsumer struct {
	b        *fakeBackend
	spec     broker.SubscriptionSpec
	reads    map[broker.ShardID]*fakeRead // shards assigned, or stopped and not released
	events   map[broker.ShardID]broker.ShardEvent
	eventSig chan struct{}
	reported bool // the last Poll returned the current error
	closed   bool
}

// fakeRead is a consumer's reading of one shard: the acked position as it
// stands here (saved only by saves) and the fetch cursor.
type fakeRead struct {
	fence    uint64
	assigned bool  // fetched; false: stopped, takes acks until Release
	next     int64 // the first offset not acked
	fetch    int64 // the next offset to fetch
	high     int64 // the offset after the highest fetched: acks above are for nothing fetched
	saved    int64 // Next as this reader last saved or loaded it
	acked    map[int64]bool
	attempts map[int64]uint32
}

// Assign loads arriving shards at once (taking their fence), stops leaving
// ones, and rewinds a stopped one assigned again to its first un-acked
// message.
func (c *fakeConsumer) Assign(shards []broker.ShardID) {
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.closed {
		return
	}
	want := map[broker.ShardID]bool{}
	for _, sh := range shards {
		want[sh] = true
	}
	for sh, r := range c.reads {
		if !want[sh] {
			r.assigned = false
		}
	}
	for sh := range want {
		r := c.reads[sh]
		switch {
		case r == nil:
			sv := b.savedLocked(fakeKey{c.spec.Name, sh}, c.spec.Start)
			sv.fence++
			r = &fakeRead{fence: sv.fence, assigned: true, next: sv.pos.Next, fetch: sv.pos.Next, high: sv.pos.Next, saved: sv.pos.Next,
				acked: map[int64]bool{}, attempts: maps.Clone(sv.pos.Attempts)}
			if r.attempts == nil {
				r.attempts = map[int64]uint32{}
			}
			for _, o := range sv.pos.Acked {
				r.acked[o] = true
			}
			c.reads[sh] = r
		case !r.assigned:
			r.assigned, r.fetch = true, r.next
		}
	}
	b.wakeLocked()
}

// Release saves and forgets shards that are no longer assigned (assigned
// ones are left alone); a fenced save counts as released.
func (c *fakeConsumer) Release(ctx context.Context, shards []broker.ShardID) error {
	return c.b.retry(ctx, func() bool {
		done := true
		for _, sh := range shards {
			r := c.reads[sh]
			if r == nil || r.assigned {
				continue
			}
			if c.saveLocked(sh, r) == saveNotStanding {
				done = false
				continue
			}
			delete(c.reads, sh)
		}
		return done
	})
}

// retry runs try under the lock until it reports done or ctx ends.
func (b *fakeBackend) retry(ctx context.Context, try func() bool) error {
	for {
		b.mu.Lock()
		done := try()
		b.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-time.After(5 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

type saveResult int

const (
	saveDone saveResult = iota
	saveFenced
	saveNotStanding
)

// saveLocked writes r's acked position, acks above it and attempts of
// un-acked messages, unless another reader holds the fence or the node's
// standing is in doubt.
func (c *fakeConsumer) saveLocked(sh broker.ShardID, r *fakeRead) saveResult {
	if c.spec.Standing != nil && !c.spec.Standing() {
		return saveNotStanding // no save is even tried: it would not learn of the fence either
	}
	sv := c.b.savedLocked(fakeKey{c.spec.Name, sh}, c.spec.Start)
	if sv.fence != r.fence {
		return saveFenced
	}
	pos := fakePosition{Next: r.next, Attempts: map[int64]uint32{}}
	for o := range r.acked {
		pos.Acked = append(pos.Acked, o)
	}
	slices.Sort(pos.Acked)
	for o, n := range r.attempts {
		if !r.acked[o] && n > 0 {
			pos.Attempts[o] = n
		}
	}
	sv.pos = pos
	r.saved = r.next
	return saveDone
}

// Poll returns up to max messages, one shard after another in turns,
// skipping acked ones. While a poll error is set it returns it (at once
// the first time, then after each pollWait) and fetches nothing; the first
// Poll after the error clears returns at once, with or without messages.
func (c *fakeConsumer) Poll(ctx context.Context, max int) ([]broker.Delivery, error) {
	b := c.b
	timer := time.NewTimer(b.pollWait)
	defer timer.Stop()
	b.mu.Lock()
	b.polls++
	b.mu.Unlock()
	for {
		b.mu.Lock()
		if c.closed {
			b.mu.Unlock()
			return nil, broker.ErrClosed
		}
		if b.pollErr != nil {
			if !c.reported || b.errAtOnce {
				c.reported = true
				err := b.pollErr
				b.mu.Unlock()
				return nil, fmt.Errorf("%w: %w", broker.ErrUnavailable, err)
			}
		} else if ds := c.fetchLocked(max); len(ds) > 0 || c.reported {
			c.reported = false
			b.mu.Unlock()
			return ds, nil
		}
		wake := b.changed
		b.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
			b.mu.Lock()
			err := b.pollErr
			b.mu.Unlock()
			if err != nil {
				return nil, fmt.Errorf("%w: %w", broker.ErrUnavailable, err)
			}
			return nil, nil
		}
	}
}

func (c *fakeConsumer) fetchLocked(max int) []broker.Delivery {
	var shards []broker.ShardID
	for sh, r := range c.reads {
		if r.assigned {
			shards = append(shards, sh)
		}
	}
	slices.SortFunc(shards, func(a, b broker.ShardID) int {
		return cmp.Or(strings.Compare(a.Topic, b.Topic), cmp.Compare(a.Index, b.Index))
	})
	var out []broker.Delivery
	for more := true; more && len(out) < max; {
		more = false
		for _, sh := range shards {
			if len(out) == max {
				break
			}
			if d, ok := c.fetchOneLocked(sh, c.reads[sh]); ok {
				out = append(out, d)
				more = true
			}
		}
	}
	return out
}

func (c *fakeConsumer) fetchOneLocked(sh broker.ShardID, r *fakeRead) (broker.Delivery, bool) {
	log := c.b.topics[sh.Topic][sh.Index]
	for r.fetch < int64(len(log)) && r.acked[r.fetch] {
		r.fetch++
	}
	if r.fetch >= int64(len(log)) || c.b.atLimitLocked(r) {
		r.high = max(r.high, r.fetch)
		return broker.Delivery{}, false
	}
	e := log[r.fetch]
	d := broker.Delivery{ID: fakeID(sh, r.fetch), Shard: sh, Message: e.msg, PublishTime: e.at, Attempts: r.attempts[r.fetch]}
	r.fetch++
	r.high = max(r.high, r.fetch)
	return d, true
}

// findLocked resolves an id to a shard this consumer holds and an offset it
// fetched and has not seen acked.
func (c *fakeConsumer) findLocked(id string) (*fakeRead, int64, bool) {
	sh, off, ok := parseFakeID(id)
	if !ok || c.closed {
		return nil, 0, false
	}
	r := c.reads[sh]
	if r == nil || off < r.next || off >= r.high || r.acked[off] {
		return nil, 0, false
	}
	return r, off, true
}

func (c *fakeConsumer) Delivered(ids ...string) {
	c.b.mu.Lock()
	defer c.b.mu.Unlock()
	for _, id := range ids {
		if r, off, ok := c.findLocked(id); ok {
			r.attempts[off]++
			c.b.delivered = append(c.b.delivered, id)
		}
	}
}

func (c *fakeConsumer) Ack(ids ...string) {
	c.b.mu.Lock()
	defer c.b.mu.Unlock()
	full := map[broker.ShardID]*fakeRead{}
	for _, id := range ids {
		r, off, ok := c.findLocked(id)
		if !ok {
			continue
		}
		c.b.acked = append(c.b.acked, id)
		r.acked[off] = true
		for r.acked[r.next] {
			delete(r.acked, r.next)
			delete(r.attempts, r.next)
			r.next++
		}
		if sh, _, _ := parseFakeID(id); c.b.atLimitLocked(r) && r.next > r.saved {
			full[sh] = r
		}
	}
	for sh, r := range full {
		c.saveOrLoseLocked(sh, r)
	}
	c.b.wakeLocked()
}

// atLimitLocked says whether r has as many messages fetched and not saved
// as the consumer may hold.
func (b *fakeBackend) atLimitLocked(r *fakeRead) bool {
	return b.maxPerShard > 0 && r.fetch-r.saved >= b.maxPerShard
}

// saveOrLoseLocked saves a shard; when another reader holds its fence it
// forgets the shard and reports it lost.
func (c *fakeConsumer) saveOrLoseLocked(sh broker.ShardID, r *fakeRead) {
	if c.saveLocked(sh, r) == saveFenced {
		delete(c.reads, sh)
		c.events[sh] = broker.ShardEvent{Shard: sh, Kind: broker.ShardLost, Reason: "another reader took the shard's fence"}
		signalFake(c.eventSig)
	}
}

// Confirm saves each shard held with its fence and forgets the fenced ones,
// returning them.
func (c *fakeConsumer) Confirm(ctx context.Context, shards []broker.ShardID) ([]broker.ShardID, error) {
	var lost []broker.ShardID
	err := c.b.retry(ctx, func() bool {
		done := true
		for _, sh := range shards {
			r := c.reads[sh]
			if r == nil || slices.Contains(lost, sh) {
				continue
			}
			switch c.saveLocked(sh, r) {
			case saveFenced:
				delete(c.reads, sh)
				lost = append(lost, sh)
			case saveNotStanding:
				done = false
			case saveDone:
			}
		}
		return done
	})
	return lost, err
}

func (c *fakeConsumer) Abandon(shards []broker.ShardID) {
	c.b.mu.Lock()
	defer c.b.mu.Unlock()
	for _, sh := range shards {
		delete(c.reads, sh)
		delete(c.events, sh)
	}
}

func (c *fakeConsumer) Events() <-chan struct{} { return c.eventSig }

func (c *fakeConsumer) TakeEvents() []broker.ShardEvent {
	c.b.mu.Lock()
	defer c.b.mu.Unlock()
	out := slices.Collect(maps.Values(c.events))
	clear(c.events)
	return out
}

// Close saves every shard held (fenced ones are skipped) and stops.
func (c *fakeConsumer) Close(ctx context.Context) error {
	err := c.b.retry(ctx, func() bool {
		if c.closed {
			return true
		}
		for sh, r := range c.reads {
			if c.saveLocked(sh, r) == saveNotStanding {
				return false
			}
		}
		return true
	})
	c.b.mu.Lock()
	defer c.b.mu.Unlock()
	if !c.closed {
		c.closed = true
		clear(c.reads)
		delete(c.b.consumers, c)
		c.b.wakeLocked()
	}
	return err
}

// ---- ids ----

// fakeID is "<topic>/<shard>@<offset>"; parsing from the right keeps topic
// names with '/' or '@' intact.
func fakeID(sh broker.ShardID, off int64) string {
	return fmt.Sprintf("%s/%d@%d", sh.Topic, sh.Index, off)
}

func parseFakeID(id string) (broker.ShardID, int64, bool) {
	at := strings.LastIndexByte(id, '@')
	if at < 0 {
		return broker.ShardID{}, 0, false
	}
	slash := strings.LastIndexByte(id[:at], '/')
	if slash < 0 {
		return broker.ShardID{}, 0, false
	}
	idx, err1 := strconv.ParseInt(id[slash+1:at], 10, 32)
	off, err2 := strconv.ParseInt(id[at+1:], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return broker.ShardID{}, 0, false
	}
	return broker.ShardID{Topic: id[:slash], Index: int32(idx)}, off, true
}

func signalFake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
