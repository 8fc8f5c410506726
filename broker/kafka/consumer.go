package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
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
// membership: the gateway assigns), committing as a "simple consumer"
// (generation -1) under the group GroupPrefix+name.
func (b *Broker) Consume(_ context.Context, spec broker.SubscriptionSpec) (broker.Consumer, error) {
	c := &consumer{
		b:         b,
		spec:      spec,
		group:     b.cfg.GroupPrefix + spec.Name,
		log:       b.log().With("subscription", spec.Name),
		parts:     map[tp]*partState{},
		kick:      make(chan struct{}, 1),
		commitNow: make(chan struct{}, 1),
	}
	opts := append(b.commonOpts(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), // used only if a committed offset fell off the log
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

type partPhase int

const (
	phaseLoading  partPhase = iota // waiting for the committed position
	phaseFetching                  // being fetched
	phasePaused                    // too much uncommitted: paused at the broker
	phaseFailed                    // fetch failed: removed, re-subscribed at retryAt
	phaseStopped                   // no longer fetched: still takes acks until Release
)

type partState struct {
	phase   partPhase
	tr      *tracker // nil while loading
	unsaved bool     // the start position was chosen here and is not committed yet
	retryAt time.Time
	fails   int  // consecutive fetch failures, for backoff
	release bool // Release asked for it: commit it and forget it
	// epoch changes whenever fetching of the partition stops or restarts
	// at a position of ours: records a poll got before that are stale.
	epoch uint64
}

// consumer implements broker.Consumer.
//
// One goroutine (manage) loads start positions, re-subscribes failed
// partitions and commits; Poll runs on the caller's goroutine; Ack on any.
// They share parts under mu. franz-go calls are made without mu held.
type consumer struct {
	b      *Broker
	spec   broker.SubscriptionSpec
	group  string
	log    *slog.Logger
	cl     *kgo.Client
	adm    *kadm.Client
	health healthHook

	mu       sync.Mutex // guards parts, want, acks, lastErr
	parts    map[tp]*partState
	want     map[tp]bool
	acks     int   // acks since the last commit, all partitions
	lastErr  error // the last fetch error, until a poll succeeds
	refresh  bool  // commit every position, changed or not
	closed   bool
	failures int // consecutive commit failures

	commitMu  sync.Mutex    // one commit at a time
	kick      chan struct{} // the wanted set changed or a retry is due
	commitNow chan struct{}
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

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
	fs.EachError(func(topic string, p int32, err error) {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return
		}
		var loss *kgo.ErrDataLoss
		if errors.As(err, &loss) {
			// Informational: franz-go already moved on (for example the
			// log start passed a lagging subscription). Not a failure.
			c.log.Warn("the broker no longer has records this subscription had not read", "err", err)
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
		if ps.tr.fetched(r.Offset) {
			out = append(out, toDelivery(r))
		}
		ps.fails = 0
	})
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
	// franz-go's pause, resume, add and remove are called under mu, so that
	// their order matches our phases (they take only franz-go's own locks).
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
	return out, err
}

// removeLocked stops fetching partitions. A pause outlives franz-go's
// RemoveConsumePartitions and would keep a re-added partition silent, so
// it is lifted too.
func (c *consumer) removeLocked(parts map[string][]int32) {
	c.cl.RemoveConsumePartitions(parts)
	c.cl.ResumeFetchPartitions(parts)
}

// healthLocked says whether fetching works: no partition is waiting to be
// re-subscribed, and the last connection attempt did not fail.
func (c *consumer) healthLocked() error {
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

func toDelivery(r *kgo.Record) broker.Delivery {
	d := broker.Delivery{
		ID:          encodeID(position{topic: r.Topic, partition: r.Partition, offset: r.Offset}),
		Shard:       broker.ShardID{Topic: r.Topic, Index: r.Partition},
		Message:     broker.Message{Topic: r.Topic, Key: r.Key, Payload: r.Value},
		PublishTime: r.Timestamp,
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
		c.acks++
		if c.acks >= c.b.cfg.CommitEvery {
			commit = true
		}
		// A paused partition resumes only after a commit: commit as soon
		// as acks have drained it to half, not at the next tick.
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

// Release implements broker.Consumer.
func (c *consumer) Release(ctx context.Context, shards []broker.ShardID) error {
	c.mu.Lock()
	n := 0
	for _, s := range shards {
		k := tp{s.Topic, s.Index}
		ps := c.parts[k]
		switch {
		case ps == nil:
		case c.want[k] || ps.phase != phaseStopped:
			c.mu.Unlock()
			return fmt.Errorf("kafka: release %s/%d: it is assigned", k.topic, k.partition)
		case ps.tr == nil: // never loaded: nothing to save
			delete(c.parts, k)
		default:
			ps.release = true
			n++
		}
	}
	c.mu.Unlock()
	if n == 0 {
		return nil
	}
	for attempt := 1; ; attempt++ {
		err := c.commit(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafka: release: %w", err)
		case <-time.After(backoff(attempt)):
		}
	}
}

// Close implements broker.Consumer.
func (c *consumer) Close(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	defer func() {
		c.b.mu.Lock()
		delete(c.b.consumers, c)
		c.b.mu.Unlock()
		c.cl.Close()
	}()
	for {
		if c.b.isAborted() {
			return nil
		}
		err := c.commit(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafka: final commit of %q: %w", c.spec.Name, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// manage owns the slow work: loading start positions, re-subscribing
// failed partitions, and committing on a timer, on demand and on failure.
func (c *consumer) manage(ctx context.Context) {
	tick := time.NewTicker(c.b.cfg.CommitInterval)
	defer tick.Stop()
	// Kafka expires committed offsets of a group without members
	// offsets.retention.minutes (7 days by default) after their last
	// commit; an idle shard would lose its position. Re-commit hourly.
	refresh := time.NewTicker(time.Hour)
	defer refresh.Stop()
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	commitRetry := time.NewTimer(time.Hour)
	defer commitRetry.Stop()
	failures := 0
	doCommit := func() {
		if err := c.commit(ctx); err != nil && ctx.Err() == nil {
			failures++
			c.log.Warn("commit failed; retrying", "err", err, "attempt", failures)
			commitRetry.Reset(backoff(failures))
			return
		}
		failures = 0
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
		case <-retry.C:
		case <-tick.C:
			doCommit()
			continue
		case <-c.commitNow:
			doCommit()
			continue
		case <-commitRetry.C:
			doCommit()
			continue
		case <-refresh.C:
			c.mu.Lock()
			c.refresh = true
			c.mu.Unlock()
			doCommit()
			continue
		}
		next := c.reconcile(ctx)
		if !next.IsZero() {
			retry.Reset(time.Until(next))
		}
	}
}

// reconcile brings the fetched set in line with the wanted one and
// re-subscribes failed partitions whose backoff has passed. It returns when
// it wants to run again (zero: not needed).
func (c *consumer) reconcile(ctx context.Context) time.Time {
	now := time.Now()
	var load []tp
	add := map[string]map[int32]kgo.Offset{}
	var retryAt time.Time
	later := func(t time.Time) {
		if retryAt.IsZero() || t.Before(retryAt) {
			retryAt = t
		}
	}
	c.mu.Lock()
	for k := range c.want {
		ps := c.parts[k]
		switch {
		case ps == nil:
			c.parts[k] = &partState{phase: phaseLoading}
			load = append(load, k)
		case ps.phase == phaseLoading && ps.tr == nil && !ps.retryAt.IsZero():
			if now.Before(ps.retryAt) {
				later(ps.retryAt)
				continue
			}
			load = append(load, k)
		case ps.phase == phaseFailed:
			if now.Before(ps.retryAt) {
				later(ps.retryAt)
				continue
			}
			ps.phase = phaseFetching
			ps.epoch++
			addOffset(add, k, ps.tr.next)
		case ps.phase == phaseStopped && ps.tr == nil:
			ps.phase = phaseLoading
			load = append(load, k)
		case ps.phase == phaseStopped:
			// Wanted again before it was released. What was fetched and
			// not acked may have been dropped by the node: fetch again
			// from the commit point, keeping the acks (in flight ones
			// too) that the tracker has.
			ps.tr.rewind()
			ps.release = false
			ps.phase = phaseFetching
			ps.epoch++
			addOffset(add, k, ps.tr.next)
		}
	}
	if len(add) > 0 {
		c.cl.AddConsumePartitions(add)
	}
	c.mu.Unlock()
	if len(load) > 0 {
		if t := c.load(ctx, load); !t.IsZero() {
			later(t)
		}
	}
	return retryAt
}

func addOffset(m map[string]map[int32]kgo.Offset, k tp, at int64) {
	if m[k.topic] == nil {
		m[k.topic] = map[int32]kgo.Offset{}
	}
	m[k.topic][k.partition] = kgo.NewOffset().At(at)
}

// load reads the committed positions of parts, chooses the start of those
// with none, and starts fetching. On failure it returns when to retry.
func (c *consumer) load(ctx context.Context, parts []tp) time.Time {
	start, err := c.startPositions(ctx, parts)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.lastErr = err
		var at time.Time
		for _, k := range parts {
			if ps := c.parts[k]; ps != nil && ps.tr == nil {
				ps.fails++
				ps.retryAt = time.Now().Add(backoff(ps.fails))
				at = ps.retryAt
			}
		}
		c.log.Warn("reading committed positions failed; retrying", "err", err)
		return at
	}
	add := map[string]map[int32]kgo.Offset{}
	unsaved := false
	var retry time.Time
	for _, k := range parts {
		ps := c.parts[k]
		if ps == nil || ps.tr != nil {
			continue
		}
		pos, ok := start[k]
		if !ok { // the broker did not say: try again
			ps.fails++
			ps.retryAt = time.Now().Add(backoff(ps.fails))
			if retry.IsZero() || ps.retryAt.Before(retry) {
				retry = ps.retryAt
			}
			continue
		}
		ps.tr = newTracker(pos.at, pos.acked)
		ps.unsaved = !pos.committed
		unsaved = unsaved || ps.unsaved
		ps.fails, ps.retryAt = 0, time.Time{}
		if !c.want[k] {
			ps.phase = phaseStopped // unassigned while loading
			continue
		}
		ps.phase = phaseFetching
		addOffset(add, k, pos.at)
	}
	if len(add) > 0 {
		c.cl.AddConsumePartitions(add)
	}
	if unsaved {
		signal(c.commitNow) // make the chosen start durable at once
	}
	return retry
}

type startPos struct {
	at        int64
	acked     []int64
	committed bool
}

// startPositions reads committed offsets (with the acks in their
// metadata) and, for partitions with none, the start the subscription asks
// for: the log's start for Earliest, its end for Latest.
func (c *consumer) startPositions(ctx context.Context, parts []tp) (map[tp]startPos, error) {
	out := make(map[tp]startPos, len(parts))
	var topics []string
	for _, k := range parts {
		if !slices.Contains(topics, k.topic) {
			topics = append(topics, k.topic)
		}
	}
	committed, err := c.adm.FetchOffsetsForTopics(ctx, c.group, topics...)
	if err == nil {
		err = committed.Error()
	}
	// Kafka answers -1 per partition for a group that never committed;
	// kfake answers GROUP_ID_NOT_FOUND. Both mean "no position".
	if err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
		return nil, fmt.Errorf("fetching committed offsets of %q: %w", c.group, err)
	}
	var missing []string
	for _, k := range parts {
		if o, ok := committed.Lookup(k.topic, k.partition); ok && o.Err == nil && o.At >= 0 {
			acked, err := decodeAcked(o.At, o.Metadata)
			if err != nil {
				c.log.Warn("ignoring unreadable commit metadata", "topic", k.topic, "partition", k.partition, "err", err)
			}
			out[k] = startPos{at: o.At, acked: acked, committed: true}
			continue
		}
		if !slices.Contains(missing, k.topic) {
			missing = append(missing, k.topic)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	list := c.adm.ListEndOffsets
	if c.spec.Start == broker.StartEarliest {
		list = c.adm.ListStartOffsets
	}
	listed, err := list(ctx, missing...)
	if err == nil {
		err = listed.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("listing offsets: %w", err)
	}
	for _, k := range parts {
		if _, ok := out[k]; ok {
			continue
		}
		if l, ok := listed.Lookup(k.topic, k.partition); ok && l.Offset >= 0 {
			out[k] = startPos{at: l.Offset}
		}
	}
	return out, nil
}

// commit commits the commit point of every partition that moved, and
// forgets partitions no longer wanted once their position is saved.
func (c *consumer) commit(ctx context.Context) error {
	type pending struct {
		at   int64
		acks int
	}
	c.commitMu.Lock()
	defer c.commitMu.Unlock()
	offsets := kadm.Offsets{}
	snap := map[tp]pending{}
	c.mu.Lock()
	refresh := c.refresh
	for k, ps := range c.parts {
		if ps.tr == nil || !(ps.unsaved || ps.tr.dirty() || ps.release || refresh) {
			continue
		}
		at, above := ps.tr.commitPoint()
		offsets.Add(kadm.Offset{Topic: k.topic, Partition: k.partition, At: at, LeaderEpoch: -1, Metadata: encodeAcked(at, above)})
		snap[k] = pending{at: at, acks: ps.tr.acks}
	}
	c.mu.Unlock()
	if len(snap) == 0 {
		return nil
	}

	resp, err := c.adm.CommitOffsets(ctx, c.group, offsets)
	if err != nil {
		return fmt.Errorf("committing %q: %w", c.group, err)
	}
	resume := map[string][]int32{}
	c.mu.Lock()
	if refresh {
		c.refresh = false // only a commit that included every position clears it
	}
	var firstErr error
	total := 0
	for k, p := range snap {
		r, ok := resp.Lookup(k.topic, k.partition)
		if !ok || r.Err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("committing %s/%d: %w", k.topic, k.partition, r.Err)
			}
			continue
		}
		ps := c.parts[k]
		if ps == nil || ps.tr == nil {
			continue
		}
		ps.tr.committedAt(p.at, p.acks)
		ps.unsaved = false
		total += p.acks
		if ps.phase == phaseStopped && ps.release {
			delete(c.parts, k)
			continue
		}
		if ps.phase == phasePaused && ps.tr.uncommitted() <= int64(c.b.cfg.MaxBufferedPerShard/2) {
			ps.phase = phaseFetching
			resume[k.topic] = append(resume[k.topic], k.partition)
		}
	}
	c.acks -= total
	if c.acks < 0 {
		c.acks = 0
	}
	if len(resume) > 0 {
		c.cl.ResumeFetchPartitions(resume)
	}
	c.mu.Unlock()
	return firstErr
}

// backoff grows from 100ms to 5s.
func backoff(attempt int) time.Duration {
	d := 100 * time.Millisecond
	for i := 1; i < attempt && d < 5*time.Second; i++ {
		d *= 2
	}
	return min(d, 5*time.Second)
}

// healthHook notices brokers that cannot be reached: with direct
// partition consumption franz-go reports no error from PollFetches when a
// broker is down (FACTS.md), so a failed connect since the last good fetch
// response counts as unavailable.
type healthHook struct {
	lastFail atomic.Int64 // unix nanos of the last failed connect
	lastOK   atomic.Int64 // unix nanos of the last fetch response read
	failErr  atomic.Pointer[error]
}

func (h *healthHook) OnBrokerConnect(_ kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err != nil {
		h.failErr.Store(&err)
		h.lastFail.Store(time.Now().UnixNano())
	}
}

func (h *healthHook) OnBrokerRead(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if err == nil && key == 1 { // Fetch
		h.lastOK.Store(time.Now().UnixNano())
	}
}

func (h *healthHook) err() error {
	// Fetch responses arrive at least every FetchMaxWait while the
	// brokers answer; a failed connect (say, to a dead seed among live
	// brokers) counts only once they have stopped for a second.
	ok := h.lastOK.Load()
	if f := h.lastFail.Load(); f != 0 && f > ok && time.Since(time.Unix(0, ok)) > time.Second {
		return fmt.Errorf("connecting to the broker: %w", *h.failErr.Load())
	}
	return nil
}

var _ broker.BacklogReporter = (*Broker)(nil)

// Backlog implements broker.BacklogReporter: end offset minus committed
// offset (or the log start when nothing is committed).
func (b *Broker) Backlog(ctx context.Context, subscription string, shards []broker.ShardID) (map[broker.ShardID]int64, error) {
	adm := kadm.NewClient(b.producer)
	var topics []string
	for _, s := range shards {
		if !slices.Contains(topics, s.Topic) {
			topics = append(topics, s.Topic)
		}
	}
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return nil, translate(err)
	}
	starts, err := adm.ListStartOffsets(ctx, topics...)
	if err != nil {
		return nil, translate(err)
	}
	committed, err := adm.FetchOffsetsForTopics(ctx, b.cfg.GroupPrefix+subscription, topics...)
	if err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
		return nil, translate(err)
	}
	out := make(map[broker.ShardID]int64, len(shards))
	for _, s := range shards {
		end, ok := ends.Lookup(s.Topic, s.Index)
		if !ok || end.Err != nil {
			continue
		}
		from := int64(0)
		if st, ok := starts.Lookup(s.Topic, s.Index); ok && st.Err == nil {
			from = st.Offset
		}
		if c, ok := committed.Lookup(s.Topic, s.Index); ok && c.Err == nil && c.At >= 0 {
			from = c.At
		}
		out[s] = max(end.Offset-from, 0)
	}
	return out, nil
}
