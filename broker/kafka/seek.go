package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/streamgate/streamgate/broker"
	"github.com/streamgate/streamgate/broker/cursor"
)

var _ broker.Seeker = (*Broker)(nil)

// Seek implements broker.Seeker: each partition's committed offset is set
// to the target (the log start, the end, or the first offset at or after
// the time, ListOffsets by timestamp, which answers the end when there is
// none), with metadata that keeps only the subscription's origin.
//
// Each partition is written as a new reader would start it: Seek takes its
// reader fence (InitProducerID bumps the epoch), so a reader that still
// holds the partition fails its next save with PRODUCER_FENCED and reports
// ShardLost, and then commits in a transaction of that fence. A partition
// with no commit yet is written under its start fence instead, the
// compare-and-set Prepare uses: a Prepare that read "no position" before
// the seek then fails its write and reads the seek's. A write whose fence
// was taken meanwhile (a reader loading the partition at that moment) is
// retried with a new fence: the seek wins, and that reader loses it.
func (b *Broker) Seek(ctx context.Context, subscription string, shards []broker.ShardID, to broker.SeekTo) error {
	if len(shards) == 0 {
		return nil
	}
	group := b.cfg.GroupPrefix + subscription
	todo := map[tp]bool{}
	for _, s := range shards {
		todo[tp{s.Topic, s.Index}] = true
	}
	err := cursor.Retry(ctx, func() (bool, error) {
		parts := make([]tp, 0, len(todo))
		for k := range todo {
			parts = append(parts, k)
		}
		done, err := b.seekOnce(ctx, group, parts, to)
		for _, k := range done {
			delete(todo, k)
		}
		if err == nil && len(todo) > 0 {
			err = fmt.Errorf("%d partition(s) were fenced while seeking", len(todo))
		}
		return len(todo) == 0, err
	})
	if err != nil {
		return fmt.Errorf("kafka: seek %q: %w", subscription, translate(err))
	}
	return nil
}

// seekOnce writes the target position of parts and returns those written.
func (b *Broker) seekOnce(ctx context.Context, group string, parts []tp, to broker.SeekTo) ([]tp, error) {
	readers, ferr := takeFences(ctx, b.txn, func(k tp) string { return readerID(group, k) }, parts)
	if len(readers) == 0 {
		return nil, ferr
	}
	adm := kadm.NewClient(b.txn)
	// Read after the fences: no reader saves after this point, so the
	// origin read here is the subscription's for good.
	have, err := readSaved(ctx, adm, group, parts, b.log())
	if err != nil {
		return nil, err
	}
	targets, err := seekTargets(ctx, adm, parts, to)
	if err != nil {
		return nil, err
	}
	o := originOf(have, broker.SubscriptionSpec{})
	var unsaved []tp
	for _, k := range parts {
		if _, ok := have[k]; !ok && readers[k] != nil {
			unsaved = append(unsaved, k)
		}
	}
	starts, serr := takeFences(ctx, b.txn, func(k tp) string { return startID(group, k) }, unsaved)

	var mu sync.Mutex
	var done []tp
	firstErr := errors.Join(ferr, serr)
	parallel(parts, func(k tp) {
		f := readers[k]
		if _, ok := have[k]; !ok {
			f = starts[k]
		}
		at, ok := targets[k]
		if f == nil || !ok {
			return // no fence or no answer: the next round tries again
		}
		meta := cursor.Saved{Origin: o}
		err := fencedCommit(ctx, b.txn, group, f, k, at, encodeMeta(at, meta))
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err == nil:
			done = append(done, k)
		case !errors.Is(err, errFenced) && firstErr == nil:
			firstErr = fmt.Errorf("seeking %s/%d: %w", k.topic, k.partition, err)
		}
	})
	return done, firstErr
}

// seekTargets is the offset each of parts moves to.
func seekTargets(ctx context.Context, adm *kadm.Client, parts []tp, to broker.SeekTo) (map[tp]int64, error) {
	topics := topicsOf(parts)
	var listed kadm.ListedOffsets
	var err error
	switch to.Kind {
	case broker.SeekEarliest:
		listed, err = adm.ListStartOffsets(ctx, topics...)
	case broker.SeekLatest:
		listed, err = adm.ListEndOffsets(ctx, topics...)
	case broker.SeekTime:
		// The first offset at or after the time; kadm answers the end
		// offset for a partition with none.
		listed, err = adm.ListOffsetsAfterMilli(ctx, to.Time.UnixMilli(), topics...)
	default:
		return nil, fmt.Errorf("seek: unknown target kind %d", to.Kind)
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
