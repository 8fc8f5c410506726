package kafka

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/streamgate/streamgate/broker"
	"github.com/streamgate/streamgate/broker/cursor"
)

var _ broker.Inspector = (*Broker)(nil)

// Inspect implements broker.Inspector from the group's committed offsets:
// a partition's backlog is its end offset less the committed offset (the
// next record to read) and less the acked offsets above it that the commit
// metadata carries. Without a commit it counts from where a reader would
// start (chooseStarts): the log start for an earliest subscription, the
// first record after the creation time the other partitions' metadata
// carries, else the log start. Requests: OffsetFetch, Metadata, two
// ListOffsets, and a third (by time) only when a partition has no commit.
func (b *Broker) Inspect(ctx context.Context, subscription string, topics []string) ([]broker.ShardProgress, error) {
	adm := kadm.NewClient(b.producer)
	group := b.cfg.GroupPrefix + subscription

	committed, err := adm.FetchOffsets(ctx, group)
	if err == nil {
		err = committed.Error()
	}
	switch {
	case errors.Is(err, kerr.GroupIDNotFound):
		// kfake's answer for a group that never committed; Kafka answers
		// -1 per partition instead (skipped below). Both: nothing saved.
		committed = nil
	case err != nil:
		return nil, translate(fmt.Errorf("reading the saved positions of %q: %w", subscription, err))
	}
	have := map[tp]saved{}
	committed.Each(func(o kadm.OffsetResponse) {
		if o.Err != nil || o.At < 0 {
			return
		}
		meta, err := decodeMeta(o.At, o.Metadata)
		if err != nil {
			// Unreadable acks only make the backlog err high.
			b.log().Warn("ignoring unreadable commit metadata", "topic", o.Topic, "partition", o.Partition, "err", err)
		}
		have[tp{o.Topic, o.Partition}] = saved{at: o.At, meta: meta}
	})

	named := len(topics) > 0
	if !named {
		for k := range have {
			if !slices.Contains(topics, k.topic) {
				topics = append(topics, k.topic)
			}
		}
		if len(topics) == 0 {
			return nil, nil // the subscription is unknown to the backend
		}
		slices.Sort(topics)
	}

	details, err := adm.ListTopics(ctx, topics...)
	if err != nil {
		return nil, translate(err)
	}
	var out []broker.ShardProgress
	var live []string // topics that exist
	for _, t := range topics {
		d, ok := details[t]
		if ok && d.Err == nil {
			live = append(live, t)
			for _, p := range d.Partitions.Numbers() {
				_, isSaved := have[tp{t, p}]
				out = append(out, broker.ShardProgress{Shard: broker.ShardID{Topic: t, Index: p}, Saved: isSaved, Backlog: -1})
			}
			continue
		}
		if named {
			if !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
				return nil, fmt.Errorf("%w: %q", broker.ErrTopicNotFound, t)
			}
			return nil, fmt.Errorf("topic %q: %w", t, translate(d.Err))
		}
		// A topic the subscription read that is gone (or unreadable now):
		// its saved positions are all there is to show.
		for k := range have {
			if k.topic == t {
				out = append(out, broker.ShardProgress{Shard: k.shard(), Saved: true, Backlog: -1})
			}
		}
	}
	slices.SortFunc(out, func(x, y broker.ShardProgress) int { return compareShards(x.Shard, y.Shard) })
	if len(live) == 0 {
		return out, nil
	}

	// Per-partition failures leave that partition's backlog unknown; only
	// a failure of the whole request fails the call.
	ends, err := adm.ListEndOffsets(ctx, live...)
	if err != nil && len(ends) == 0 {
		return nil, translate(err)
	}
	starts, err := adm.ListStartOffsets(ctx, live...)
	if err != nil && len(starts) == 0 {
		return nil, translate(err)
	}
	var after kadm.ListedOffsets // the first offsets after the creation
	o := originOfSaved(have)
	if !o.Earliest && o.CreatedMs > 0 && slices.ContainsFunc(out, func(p broker.ShardProgress) bool { return !p.Saved }) {
		if after, err = adm.ListOffsetsAfterMilli(ctx, o.CreatedMs, live...); err != nil && len(after) == 0 {
			return nil, translate(err)
		}
	}

	for i := range out {
		p := &out[i]
		k := tp{p.Shard.Topic, p.Shard.Index}
		end, ok := ends.Lookup(k.topic, k.partition)
		if !ok || end.Err != nil || end.Offset < 0 {
			continue
		}
		logStart := int64(0)
		if st, ok := starts.Lookup(k.topic, k.partition); ok && st.Err == nil && st.Offset >= 0 {
			logStart = st.Offset
		}
		if s, ok := have[k]; ok {
			p.Backlog = savedBacklog(s, logStart, end.Offset)
			continue
		}
		from := logStart
		if a, ok := after.Lookup(k.topic, k.partition); ok && a.Err == nil && a.Offset >= 0 {
			from = a.Offset
		}
		p.Backlog = max(end.Offset-max(from, logStart), 0)
	}
	return out, nil
}

// savedBacklog counts the offsets in [max(committed, logStart), end) that
// the saved metadata does not mark acked.
func savedBacklog(s saved, logStart, end int64) int64 {
	from := max(s.at, logStart)
	n := end - from
	for _, o := range s.meta.Acked {
		if o >= from && o < end {
			n--
		}
	}
	return max(n, 0)
}

// originOfSaved is the subscription's origin as its saved positions tell
// (the earliest creation among them); zero when none tells.
func originOfSaved(have map[tp]saved) cursor.Origin {
	var o cursor.Origin
	for _, s := range have {
		if c := s.meta.Origin; c.CreatedMs > 0 && (o.CreatedMs == 0 || c.CreatedMs < o.CreatedMs) {
			o = c
		}
	}
	return o
}

// Unsaved implements broker.Inspector: the acks each of this backend's
// consumers of the subscription applied since its last successful save of
// the partition (cursor.Tracker.Acks).
func (b *Broker) Unsaved(subscription string) map[broker.ShardID]int64 {
	// Copy the consumers first: no consumer lock is taken under b.mu.
	b.mu.Lock()
	var cs []*consumer
	for c := range b.consumers {
		if c.spec.Name == subscription {
			cs = append(cs, c)
		}
	}
	b.mu.Unlock()
	out := map[broker.ShardID]int64{}
	for _, c := range cs {
		c.mu.Lock()
		for k, ps := range c.parts {
			if ps.tr != nil && ps.tr.Acks() > 0 {
				out[k.shard()] += int64(ps.tr.Acks())
			}
		}
		c.mu.Unlock()
	}
	return out
}
