// The consumer: Shards and Consume (broker.Subscriber), the consumer's
// state (partState per partition, all under consumer.mu), Assign, which
// sets the partitions the node wants, and the locked helpers that stop
// fetching and forget partitions. Everything here may be called from any
// goroutine; the ...Locked helpers with consumer.mu held. The rest of the
// consumer: poll.go (Poll), ack.go (acks, deliveries and shard events),
// health.go (whether fetching works), manage.go (its goroutine: loading,
// retries, topic checks and timed saves), save.go (fenced saves) and
// release.go (Release, Confirm and Close).

package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/streamgate/streamgate/broker"
	"github.com/streamgate/streamgate/broker/cursor"
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
		topics:    make(map[string]string, len(spec.Topics)),
	}
	for _, t := range spec.Topics {
		c.topics[t] = t
	}
	opts := append(b.commonOpts(),
		kgo.MaxVersions(fencedVersions()),
		// Used only if a saved offset fell off the log: resume at its start.
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// A resumed partition is fetched only after the in-flight fetch
		// returns, which waits up to this long when nothing is new: keep
		// it short so that a paused shard resumes quickly.
		kgo.FetchMaxWait(100*time.Millisecond),
		kgo.FetchMaxPartitionBytes(int32(b.cfg.FetchMaxPartitionBytes)),
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
	tr      *cursor.Tracker // nil while loading
	fence   *fence          // this reader's hold on the partition's saves; nil while loading
	topicID [16]byte        // the topic's id when loaded: another id means it was recreated
	unsaved bool            // the position was chosen here and is not saved yet
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

	saves cursor.SaveWatch // for SaveAcks (confirm.go)
}

// to moves the partition to phase p in a new epoch: whatever a Poll
// running now fetched of it before is dropped, and fetched again from the
// tracker's position. Every change of phase goes through to, but pausing
// and resuming, which keep franz-go's fetch position (pause, resume).
func (ps *partState) to(p partPhase) {
	ps.phase = p
	ps.epoch++
}

// pause stops fetching at the buffer limit; franz-go keeps its position.
func (ps *partState) pause() { ps.phase = phasePaused }

// resume fetches a paused partition again from where franz-go stopped.
func (ps *partState) resume() { ps.phase = phaseFetching }

// consumer implements broker.Consumer.
//
// One goroutine (manage, manage.go) loads partitions, re-subscribes failed
// ones, checks the topics and saves positions; Poll runs on the caller's
// goroutine, one call at a time; Assign, Ack, Delivered, Release, Confirm,
// Abandon, TakeEvents and Close on any.
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
	// topics maps each of spec's topics to itself: decoding an id takes
	// the topic's string from here instead of allocating one (read only).
	topics map[string]string

	mu       sync.Mutex // guards the fields below
	parts    map[tp]*partState
	assigned map[tp]bool // what Assign last gave
	acks     int         // acks since the last save, all partitions
	lastErr  error       // the last fetch error, until a poll succeeds
	topicErr error       // a topic read does not exist
	refresh  bool        // save every position, changed or not
	closed   bool
	events   map[tp]broker.ShardEvent // not taken yet
	eventSig chan struct{}            // capacity 1: events has something
	savedSig chan struct{}            // closed after a save when SaveAcks waits (confirm.go); nil when none does

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
	c.assigned = want
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
		ps.to(phaseStopped)
	}
	if len(remove) > 0 {
		// Acks for what is in flight still count; Release saves the
		// position and forgets the partition.
		c.removeLocked(remove)
	}
	c.mu.Unlock()
	signal(c.kick)
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
	delete(c.assigned, k)
	ps := c.parts[k]
	if ps == nil {
		return
	}
	if ps.phase == phaseFetching || ps.phase == phasePaused {
		c.removeLocked(map[string][]int32{k.topic: {k.partition}})
	}
	delete(c.parts, k)
}
