package kafka

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/streamgate/streamgate/broker"
	"github.com/streamgate/streamgate/broker/cursor"
)

// checkTopics notices topics deleted, or deleted and created again, under
// the consumer. franz-go, consuming partitions directly, sees neither: its
// polls of a deleted topic just come back empty, and it keeps the old
// topic id after the topic is created again (FACTS.md). A deleted topic
// makes Poll report ErrUnavailable until it exists again; a recreated one
// is read from the new log's start.
func (c *consumer) checkTopics(ctx context.Context) {
	c.mu.Lock()
	var parts []tp
	for k, ps := range c.parts {
		if ps.tr != nil {
			parts = append(parts, k)
		}
	}
	c.mu.Unlock()
	if len(parts) == 0 {
		return
	}
	details, err := c.adm.ListTopics(ctx, topicsOf(parts)...)
	if err != nil {
		return // the broker does not answer: polls report that
	}
	var gone []string
	for _, t := range topicsOf(parts) {
		d, ok := details[t]
		switch {
		case !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition):
			gone = append(gone, t)
		case d.Err != nil:
		default:
			c.checkTopicID(ctx, t, d.ID, d.Partitions.Numbers())
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(gone) > 0 {
		if c.topicErr == nil {
			c.log.Warn("topics of the subscription no longer exist", "topics", gone)
		}
		c.topicErr = fmt.Errorf("topic(s) %q no longer exist (deleted?)", gone)
		return
	}
	c.topicErr = nil
}

// checkTopicID restarts every partition of topic from the new log's start
// when the topic's id is no longer the one its partitions were loaded with.
func (c *consumer) checkTopicID(ctx context.Context, topic string, id [16]byte, partitions []int32) {
	c.mu.Lock()
	stale := false
	for k, ps := range c.parts {
		if k.topic == topic && ps.tr != nil && ps.topicID != ([16]byte{}) && ps.topicID != id {
			stale = true
		}
	}
	c.mu.Unlock()
	if !stale {
		return
	}
	starts, err := c.adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return // tried again at the next check
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// franz-go keeps the old topic id until the topic is purged from it.
	c.cl.PurgeTopicsFromClient(topic)
	add := map[string]map[int32]kgo.Offset{}
	for k, ps := range c.parts {
		if k.topic != topic {
			continue
		}
		if ps.tr == nil {
			continue // loading: it reads the new topic
		}
		start, ok := starts.Lookup(topic, k.partition)
		if !ok || start.Err != nil {
			delete(c.parts, k)
			c.eventLocked(k, broker.ShardLost, fmt.Sprintf("topic %q was created again without this shard", topic))
			continue
		}
		ps.tr = cursor.NewTracker(start.Offset, cursor.Saved{Origin: ps.tr.Origin()})
		ps.topicID = id
		ps.unsaved = true // the saved position belongs to the old log
		ps.seq++
		if ps.phase == phaseStopped {
			ps.to(phaseStopped) // a new epoch all the same: nothing fetched before counts
		} else {
			ps.to(phaseFetching)
			addOffset(add, k, start.Offset)
		}
		c.eventLocked(k, broker.ShardReset, fmt.Sprintf("topic %q was deleted and created again; reading the new log from its start", topic))
	}
	c.log.Warn("a topic was deleted and created again; reading it from the new log's start", "topic", topic, "partitions", len(partitions))
	if len(add) > 0 {
		c.cl.AddConsumePartitions(add)
	}
	signal(c.commitNow)
}
