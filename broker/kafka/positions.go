package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/streamgate/streamgate/broker"
	"github.com/streamgate/streamgate/broker/cursor"
)

// A partition's saved position is its committed offset in the group
// GroupPrefix+subscription, with cursor.Saved in the commit metadata. This
// file reads them, and chooses and saves the start of partitions that have
// none, for Prepare (before a subscriber's open is answered) and for a
// consumer that starts reading a partition.

// saved is one partition's saved position.
type saved struct {
	at   int64
	meta cursor.Saved
}

// maxParallelRequests bounds the requests one settle has in flight.
const maxParallelRequests = 16

// readSaved reads the saved positions of parts (absent: none). Kafka
// answers -1 per partition for a group that never committed; kfake answers
// GROUP_ID_NOT_FOUND: both mean "none".
func readSaved(ctx context.Context, adm *kadm.Client, group string, parts []tp, log *slog.Logger) (map[tp]saved, error) {
	committed, err := adm.FetchOffsetsForTopics(ctx, group, topicsOf(parts)...)
	if err == nil {
		err = committed.Error()
	}
	out := make(map[tp]saved, len(parts))
	if errors.Is(err, kerr.GroupIDNotFound) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the saved positions of %q: %w", group, err)
	}
	for _, k := range parts {
		o, ok := committed.Lookup(k.topic, k.partition)
		if !ok || o.Err != nil || o.At < 0 {
			continue
		}
		meta, err := decodeMeta(o.At, o.Metadata)
		if err != nil {
			log.Warn("ignoring unreadable commit metadata", "topic", k.topic, "partition", k.partition, "err", err)
		}
		out[k] = saved{at: o.At, meta: meta}
	}
	return out, nil
}

func topicsOf(parts []tp) []string {
	var topics []string
	for _, k := range parts {
		if !slices.Contains(topics, k.topic) {
			topics = append(topics, k.topic)
		}
	}
	return topics
}

// originOf is the subscription's origin as its saved positions tell, or a
// new one (created now, as spec asks) when none tells.
func originOf(have map[tp]saved, spec broker.SubscriptionSpec) cursor.Origin {
	var o cursor.Origin
	for _, s := range have {
		if c := s.meta.Origin; c.CreatedMs > 0 && (o.CreatedMs == 0 || c.CreatedMs < o.CreatedMs) {
			o = c
		}
	}
	if o.CreatedMs == 0 && len(have) > 0 {
		// Saved before origins were kept: the subscription exists, but when
		// it started is unknown. Its spec's start is all there is to go by.
		return cursor.Origin{Earliest: spec.Start == broker.StartEarliest}
	}
	if o.CreatedMs == 0 {
		o = cursor.Origin{CreatedMs: time.Now().UnixMilli(), Earliest: spec.Start == broker.StartEarliest}
	}
	return o
}

// chooseStarts picks the start of each of parts, which have no position.
func chooseStarts(ctx context.Context, adm *kadm.Client, parts []tp, o cursor.Origin, fresh bool) (map[tp]int64, error) {
	topics := topicsOf(parts)
	var listed kadm.ListedOffsets
	var err error
	switch {
	case o.Earliest:
		listed, err = adm.ListStartOffsets(ctx, topics...)
	case fresh || o.CreatedMs == 0:
		// A new subscription: from now on. The end is read after the
		// caller took the fences, so a message published after the
		// subscriber's open was answered lands at or after it.
		listed, err = adm.ListEndOffsets(ctx, topics...)
	default:
		// An existing subscription: from its creation on.
		listed, err = adm.ListOffsetsAfterMilli(ctx, o.CreatedMs, topics...)
	}
	if err == nil {
		err = listed.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("listing offsets: %w", err)
	}
	out := make(map[tp]int64, len(parts))
	for _, k := range parts {
		if l, ok := listed.Lookup(k.topic, k.partition); ok && l.Offset >= 0 {
			out[k] = l.Offset
		}
	}
	return out, nil
}

// settle returns the saved position of every one of parts, first saving
// the start of those that have none and whose start fence the caller holds
// (fences). A partition whose save is fenced is left out: another reader
// or Prepare saved it first, and reading again gives its position.
func settle(ctx context.Context, cl *kgo.Client, group string, spec broker.SubscriptionSpec, parts []tp, fences map[tp]*fence, log *slog.Logger) (map[tp]saved, error) {
	adm := kadm.NewClient(cl)
	have, err := readSaved(ctx, adm, group, parts, log)
	if err != nil {
		return nil, err
	}
	var missing []tp
	for _, k := range parts {
		if _, ok := have[k]; !ok && fences[k] != nil {
			missing = append(missing, k)
		}
	}
	if len(missing) == 0 {
		return have, nil
	}
	o := originOf(have, spec)
	starts, err := chooseStarts(ctx, adm, missing, o, len(have) == 0)
	if err != nil {
		return have, err
	}
	var mu sync.Mutex
	var firstErr error
	parallel(missing, func(k tp) {
		at, ok := starts[k]
		if !ok {
			return // the broker did not say; the caller tries again
		}
		meta := cursor.Saved{Origin: o}
		err := fencedCommit(ctx, cl, group, fences[k], k, at, encodeMeta(at, meta))
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err == nil:
			have[k] = saved{at: at, meta: meta}
		case !errors.Is(err, errFenced) && firstErr == nil:
			firstErr = fmt.Errorf("saving the start of %s/%d: %w", k.topic, k.partition, err)
		}
	})
	return have, firstErr
}

// parallel runs fn for every part, at most maxParallelRequests at once,
// and waits for all.
func parallel(parts []tp, fn func(tp)) {
	sem := make(chan struct{}, maxParallelRequests)
	var wg sync.WaitGroup
	for _, k := range parts {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			fn(k)
		}()
	}
	wg.Wait()
}

// takeFences takes a fence (id names it) of every one of parts; those that
// failed are absent, with the first error.
func takeFences(ctx context.Context, cl *kgo.Client, id func(tp) string, parts []tp) (map[tp]*fence, error) {
	var mu sync.Mutex
	out := make(map[tp]*fence, len(parts))
	var firstErr error
	parallel(parts, func(k tp) {
		f, err := takeFence(ctx, cl, id(k), k)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			return
		}
		out[k] = f
	})
	return out, firstErr
}

// prepareAttempts bounds Prepare's rounds: each round's saves are fenced
// only by another node preparing the same partitions at that moment, and
// a random pause between rounds lets one of them finish.
const prepareAttempts = 10

// Prepare implements broker.Subscriber: every shard gets a saved position
// before the subscriber's open is answered. A shard without one gets its
// start chosen and saved under its start fence, a compare-and-set: of two
// nodes preparing at once, the later one's fence makes the earlier one's
// save fail, and the earlier one then reads the position the later one
// saved. Nodes that prepare at the same moment therefore agree on one
// position, and no reader is disturbed (it holds the other fence).
func (b *Broker) Prepare(ctx context.Context, spec broker.SubscriptionSpec, shards []broker.ShardID) error {
	group := b.cfg.GroupPrefix + spec.Name
	parts := make([]tp, len(shards))
	for i, s := range shards {
		parts[i] = tp{s.Topic, s.Index}
	}
	for attempt := 1; ; attempt++ {
		have, err := readSaved(ctx, kadm.NewClient(b.txn), group, parts, b.log())
		if err != nil {
			return translate(err)
		}
		var missing []tp
		for _, k := range parts {
			if _, ok := have[k]; !ok {
				missing = append(missing, k)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		if attempt > prepareAttempts {
			return fmt.Errorf("%w: could not save the start of %d shard(s) of subscription %q", broker.ErrUnavailable, len(missing), spec.Name)
		}
		if attempt > 1 {
			// Another node's fence took ours: let it finish its save.
			select {
			case <-ctx.Done():
				return translate(ctx.Err())
			case <-time.After(time.Duration(attempt) * time.Duration(5+rand.IntN(20)) * time.Millisecond):
			}
		}
		fences, err := takeFences(ctx, b.txn, func(k tp) string { return startID(group, k) }, missing)
		if err != nil {
			return translate(err)
		}
		if _, err := settle(ctx, b.txn, group, spec, parts, fences, b.log()); err != nil {
			return translate(err)
		}
	}
}
