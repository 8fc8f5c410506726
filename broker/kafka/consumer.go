package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/streamgate/streamgate/broker"
)

var (
	_ broker.Subscriber = (*Broker)(nil)
	_ broker.Consumer   = (*consumer)(nil)
)

// Shards implements broker.Subscriber: the partitions of the topics.
func (b *Broker) Shards(ctx context.Context, topics []string) ([]broker.ShardID, error) {
	details, err := kadm.NewClient(b.producer).ListTopics(ctx, topics...)
	if err != nil {
		return nil, translate(err)
	}
	var out []broker.ShardID
	for _, t := range topics {
		d, ok := details[t]
		switch {
		case !ok:
			return nil, fmt.Errorf("%w: %q", broker.ErrTopicNotFound, t)
		case d.Err != nil:
			return nil, fmt.Errorf("topic %q: %w", t, translate(d.Err))
		}
		for _, p := range d.Partitions.Numbers() {
			out = append(out, broker.ShardID{Topic: t, Index: p})
		}
	}
	slices.SortFunc(out, compareShards)
	return out, nil
}

func compareShards(a, b broker.ShardID) int {
	if a.Topic != b.Topic {
		if a.Topic < b.Topic {
			return -1
		}
		return 1
	}
	return int(a.Index - b.Index)
}

// Consume implements broker.Subscriber: one franz-go client per
// subscription per node, consuming partitions directly (no group
// membership: the gateway assigns), saving positions as fenced
// transactional commits (fence.go) under the group GroupPrefix+name.
func (b *Broker) Consume(_ context.Context, spec broker.SubscriptionSpec) (broker.Consumer, error) {
	c := &consumer{
		b:         b,
		spec:      spec,
		group:     b.cfg.GroupPrefix + spec.Name,
		log:       b.log().With("subscription", spec.Name),
		parts:     map[tp]*partState{},
		events:    map[tp]broker.ShardEvent{},
		eventSig:  make(chan struct{}, 1),
		kick:      make(chan struct{}, 1),
		commitNow: make(chan struct{}, 1),
	}
	opts := append(b.commonOpts(),
		kgo.MaxVersions(fencedVersions()),
		// Used only if a saved offset fell off the log: resume at its start.
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// A resumed partition is fetched only after the in-flight fetch
		// returns, which waits up to this long when nothing is new: keep
		// it short so that a paused shard resumes quickly.
		kgo.FetchMaxWait(100*time.Millisecond),
		kgo.WithHooks(&c.health),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka: consumer: %w", err)
	}
	c.cl = cl
	c.adm = kadm.NewClient(cl)
	b.mu.Lock()
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

func (b *Broker) log() *slog.Logger {
	if b.cfg.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return b.cfg.Logger
}

type tp struct {
	topic     string
	partition int32
}

func (k tp) shard() broker.ShardID { return broker.ShardID{Topic: k.topic, Index: k.partition} }

type partPhase int

const (
	phaseLoading  partPhase = iota // taking the fence, reading the saved position
	phaseFetching                  // being fetched
	phasePaused                    // too much unsaved: paused at the broker
	phaseFailed                    // fetch failed: removed, re-subscribed at retryAt
	phaseStopped                   // no longer fetched: still takes acks until Release
)

type partState struct {
	phase   partPhase
	tr      *tracker // nil while loading
	fence   *fence   // this reader's hold on the partition's saves; nil while loading
	topicID [16]byte // the topic's id when loaded: another id means it was recreated
	unsaved bool     // the position was chosen here and is not saved yet
	retryAt time.Time
	fails   int  // consecutive fetch or load failures, for backoff
	release bool // Release asked for it: save it and forget it
	loading bool // a load of it is in flight
	saving  bool // a save of it is in flight
	reload  bool // Confirm: the load in flight may hold a stale fence; load again
	// epoch changes whenever fetching of the partition stops or restarts
	// at a position of ours: records a poll got before that are stale.
	epoch uint64
	// seq changes with everything a save writes (acks, deliveries, the
	// commit point): a save forgets a released partition only if nothing
	// changed since its snapshot.
	seq uint64
}

// consumer implements broker.Consumer.
//
// One goroutine (manage, save.go) loads partitions, re-subscribes failed
// ones, checks the topics and saves positions; Poll runs on the caller's
// goroutine; Assign, Ack, Delivered, Release, Confirm and Abandon on any.
// They share parts under mu. franz-go's pause, resume, add and remove are
// called with mu held, so that their order matches the phases (they take
// only franz-go's own locks); requests to the broker are made without it.
type consumer struct {
	b      *Broker
	spec   broker.SubscriptionSpec
	group  string
	log    *slog.Logger
	cl     *kgo.Client
	adm    *kadm.Client
	health healthHook

	mu       sync.Mutex // guards the fields below
	parts    map[tp]*partState
	want     map[tp]bool
	acks     int   // acks since the last save, all partitions
	lastErr  error // the last fetch error, until a poll succeeds
	topicErr error // a topic read does not exist
	refresh  bool  // save every position, changed or not
	closed   bool
	events   map[tp]broker.ShardEvent // not taken yet
	eventSig chan struct{}            // capacity 1: events has something

	kick      chan struct{} // the wanted set changed or a retry is due
	commitNow chan struct{}
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

// signal wakes a capacity-1 channel's reader without blocking.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Assign implements broker.Consumer.
func (c *consumer) Assign(shards []broker.ShardID) {
	want := make(map[tp]bool, len(shards))
	for _, s := range shards {
		want[tp{s.Topic, s.Index}] = true
	}
	c.mu.Lock()
	c.want = want
	// Shards that leave stop at once, not when manage next runs: an
	// Assign without a shard and another with it again, both before
	// manage looks, must still rewind it (the node dropped what it had
	// not delivered).
	remove := map[string][]int32{}
	for k, ps := range c.parts {
		if want[k] || ps.phase == phaseStopped {
			continue
		}
		if ps.phase == phaseFetching || ps.phase == phasePaused {
			remove[k.topic] = append(remove[k.topic], k.partition)
		}
		ps.phase = phaseStopped
		ps.epoch++
	}
	if len(remove) > 0 {
		// Acks for what is in flight still count; Release saves the
		// position and forgets the partition.
		c.removeLocked(remove)
	}
	c.mu.Unlock()
	signal(c.kick)
}

// Poll implements broker.Consumer.
func (c *consumer) Poll(ctx context.Context, max int) ([]broker.Delivery, error) {
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	c.mu.Lock()
	epochs := make(map[tp]uint64, len(c.parts))
	for k, ps := range c.parts {
		epochs[k] = ps.epoch
	}
	c.mu.Unlock()
	fs := c.cl.PollRecords(pctx, max)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var failed []tp
	var fetchErr error
	truncated := map[tp]int64{}
	fs.EachError(func(topic string, p int32, err error) {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return
		}
		var loss *kgo.ErrDataLoss
		if errors.As(err, &loss) {
			if loss.ResetTo <= loss.ConsumedTo {
				// The log was cut back (an unclean leader election):
				// records from ResetTo on are new ones.
				truncated[tp{topic, p}] = loss.ResetTo
			} else {
				// The log start passed a lagging subscription: franz-go
				// moved on to what still exists. Nothing to redo.
				c.log.Warn("the broker no longer has records this subscription had not read", "err", err)
			}
			return
		}
		if p >= 0 {
			failed = append(failed, tp{topic, p})
		}
		fetchErr = fmt.Errorf("fetching %s/%d: %w", topic, p, err)
	})

	var out []broker.Delivery
	restart := map[tp]bool{}
	pause := map[string][]int32{}
	remove := map[string][]int32{}
	now := time.Now()
	c.mu.Lock()
	fs.EachRecord(func(r *kgo.Record) {
		k := tp{r.Topic, r.Partition}
		ps := c.parts[k]
		if ps == nil || ps.tr == nil || (ps.phase != phaseFetching && ps.phase != phasePaused) {
			return // stopped or failed since: fetched again from tr.next when wanted
		}
		if ps.epoch != epochs[k] {
			// Restarted while this poll ran: the record may be from before
			// the restart. Fetch the partition again from our position.
			restart[k] = true
			return
		}
		if _, cut := truncated[k]; cut {
			return // fetched again after the truncation below
		}
		if deliver, prior := ps.tr.fetched(r.Offset); deliver {
			out = append(out, toDelivery(r, prior))
		}
		ps.fails = 0
	})
	for k, at := range truncated {
		ps := c.parts[k]
		if ps == nil || ps.tr == nil || (ps.phase != phaseFetching && ps.phase != phasePaused) {
			continue
		}
		ps.tr.truncate(at)
		ps.unsaved = true // the saved position may lie past the new log end
		ps.seq++
		restart[k] = true
		c.eventLocked(k, broker.ShardReset, fmt.Sprintf("the log was truncated at offset %d (records from there on are new); reading again from the saved position", at))
		c.log.Warn("the log was truncated under the subscription; reading again", "topic", k.topic, "partition", k.partition, "at", at)
	}
	if len(restart) > 0 {
		rm := map[string][]int32{}
		add := map[string]map[int32]kgo.Offset{}
		for k := range restart {
			ps := c.parts[k]
			rm[k.topic] = append(rm[k.topic], k.partition)
			addOffset(add, k, ps.tr.next)
			ps.phase = phaseFetching
			ps.epoch++
		}
		c.removeLocked(rm)
		c.cl.AddConsumePartitions(add)
	}
	for k, ps := range c.parts {
		if ps.phase == phaseFetching && ps.tr.uncommitted() > int64(c.b.cfg.MaxBufferedPerShard) {
			ps.phase = phasePaused
			pause[k.topic] = append(pause[k.topic], k.partition)
		}
	}
	for _, k := range failed {
		ps := c.parts[k]
		if ps == nil || ps.tr == nil || (ps.phase != phaseFetching && ps.phase != phasePaused) {
			continue // stopped or failed already: not fetched, nothing to re-subscribe
		}
		ps.phase = phaseFailed
		ps.epoch++
		ps.fails++
		ps.retryAt = now.Add(backoff(ps.fails))
		remove[k.topic] = append(remove[k.topic], k.partition)
	}
	if fetchErr != nil {
		c.lastErr = fetchErr
	}
	err := c.healthLocked()
	if len(pause) > 0 {
		c.cl.PauseFetchPartitions(pause)
	}
	if len(remove) > 0 {
		// Re-subscribe from where we were, after a backoff: franz-go
		// would otherwise refetch a failing partition in a tight loop.
		c.removeLocked(remove)
	}
	c.mu.Unlock()
	if len(remove) > 0 {
		c.log.Warn("fetch failed; re-subscribing after backoff", "err", fetchErr)
		signal(c.kick)
	}
	if len(truncated) > 0 {
		signal(c.commitNow)
	}
	return out, err
}

// removeLocked stops fetching partitions. A pause outlives franz-go's
// RemoveConsumePartitions and would keep a re-added partition silent, so
// it is lifted too.
func (c *consumer) removeLocked(parts map[string][]int32) {
	c.cl.RemoveConsumePartitions(parts)
	c.cl.ResumeFetchPartitions(parts)
}

// forgetLocked drops a partition: no more fetching, saving or acks. It is
// no longer wanted either, so that it is not loaded again (taking the
// fence from its new reader) until the node assigns it anew.
func (c *consumer) forgetLocked(k tp) {
	delete(c.want, k)
	ps := c.parts[k]
	if ps == nil {
		return
	}
	if ps.phase == phaseFetching || ps.phase == phasePaused {
		c.removeLocked(map[string][]int32{k.topic: {k.partition}})
	}
	delete(c.parts, k)
}

// eventLocked records an event for the node, replacing an older one of
// the same partition.
func (c *consumer) eventLocked(k tp, kind broker.ShardEventKind, reason string) {
	c.events[k] = broker.ShardEvent{Shard: k.shard(), Kind: kind, Reason: reason}
	signal(c.eventSig)
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

// healthLocked says whether fetching works: no partition is waiting to be
// re-subscribed, every topic exists, and the last connection attempt did
// not fail.
func (c *consumer) healthLocked() error {
	if c.topicErr != nil {
		return fmt.Errorf("%w: %w", broker.ErrUnavailable, c.topicErr)
	}
	for _, ps := range c.parts {
		if ps.phase == phaseFailed || (ps.phase == phaseLoading && ps.fails > 0) {
			return fmt.Errorf("%w: %w", broker.ErrUnavailable, c.lastErr)
		}
	}
	if err := c.health.err(); err != nil {
		return fmt.Errorf("%w: %w", broker.ErrUnavailable, err)
	}
	c.lastErr = nil
	return nil
}

func toDelivery(r *kgo.Record, prior uint32) broker.Delivery {
	d := broker.Delivery{
		ID:          encodeID(position{topic: r.Topic, partition: r.Partition, offset: r.Offset}),
		Shard:       broker.ShardID{Topic: r.Topic, Index: r.Partition},
		Message:     broker.Message{Topic: r.Topic, Key: r.Key, Payload: r.Value},
		PublishTime: r.Timestamp,
		Attempts:    prior,
	}
	if len(r.Headers) > 0 {
		d.Message.Headers = make([]broker.Header, len(r.Headers))
		for i, h := range r.Headers {
			d.Message.Headers[i] = broker.Header{Key: h.Key, Value: h.Value}
		}
	}
	return d
}

// Ack implements broker.Consumer.
func (c *consumer) Ack(ids ...string) {
	commit := false
	c.mu.Lock()
	for _, id := range ids {
		p, err := decodeID(id)
		if err != nil {
			continue
		}
		ps := c.parts[tp{p.topic, p.partition}]
		if ps == nil || ps.tr == nil || !ps.tr.ack(p.offset) {
			continue
		}
		ps.seq++
		c.acks++
		if c.acks >= c.b.cfg.CommitEvery {
			commit = true
		}
		// A paused partition resumes only after a save: save as soon as
		// acks have drained it to half, not at the next tick.
		if ps.phase == phasePaused {
			if o, _ := ps.tr.commitPoint(); ps.tr.next-o <= int64(c.b.cfg.MaxBufferedPerShard/2) {
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
		p, err := decodeID(id)
		if err != nil {
			continue
		}
		if ps := c.parts[tp{p.topic, p.partition}]; ps != nil && ps.tr != nil && ps.tr.delivered(p.offset) {
			ps.seq++
		}
	}
}

// Abandon implements broker.Consumer.
func (c *consumer) Abandon(shards []broker.ShardID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range shards {
		k := tp{s.Topic, s.Index}
		c.forgetLocked(k)
		delete(c.events, k)
	}
}
