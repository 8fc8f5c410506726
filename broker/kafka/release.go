// Release, Confirm and Close: the saves the node waits for. Release saves
// and forgets partitions the node stopped reading, Confirm saves claimed
// partitions with their fences to learn which another reader took, and
// Close stops manage and makes a final save. Each runs on its caller's
// goroutine (the node runs Release and Confirm on goroutines of their own)
// and saves through save.go.

package kafka

import (
	"context"
	"errors"
	"fmt"

	"github.com/streamgate/streamgate/broker"
	"github.com/streamgate/streamgate/broker/cursor"
)

// Release implements broker.Consumer.
func (c *consumer) Release(ctx context.Context, shards []broker.ShardID) error {
	only := map[tp]bool{}
	c.mu.Lock()
	for _, s := range shards {
		k := tp{s.Topic, s.Index}
		ps := c.parts[k]
		switch {
		case ps == nil:
		case c.assigned[k] || ps.phase != phaseStopped:
			c.mu.Unlock()
			return fmt.Errorf("kafka: release %s/%d: it is assigned", k.topic, k.partition)
		case ps.tr == nil: // never loaded: nothing to save
			delete(c.parts, k)
		default:
			ps.release = true
			only[k] = true
		}
	}
	c.mu.Unlock()
	if len(only) == 0 {
		return nil
	}
	// A nil error with shards left means acks arrived after the save's
	// snapshot: Retry saves again at once.
	err := cursor.Retry(ctx, func() (bool, error) {
		_, _, err := c.save(ctx, saveReq{only: only})
		c.mu.Lock()
		for k := range only {
			if ps := c.parts[k]; ps == nil || !ps.release {
				delete(only, k) // saved with every ack, or taken by another reader
			}
		}
		c.mu.Unlock()
		return len(only) == 0, err
	})
	if err != nil {
		return fmt.Errorf("kafka: release: %w", err)
	}
	return nil
}

// Confirm implements broker.Consumer.
func (c *consumer) Confirm(ctx context.Context, shards []broker.ShardID) ([]broker.ShardID, error) {
	only := map[tp]bool{}
	c.mu.Lock()
	for _, s := range shards {
		k := tp{s.Topic, s.Index}
		switch ps := c.parts[k]; {
		case ps == nil:
		case ps.tr == nil:
			ps.reload = ps.loading
		default:
			only[k] = true
		}
	}
	c.mu.Unlock()
	var lost []broker.ShardID
	if len(only) == 0 {
		return nil, nil
	}
	err := cursor.Retry(ctx, func() (bool, error) {
		done, gone, err := c.save(ctx, saveReq{only: only, force: true})
		for _, k := range done {
			delete(only, k)
		}
		for _, k := range gone {
			delete(only, k)
			lost = append(lost, k.shard())
		}
		c.mu.Lock()
		for k := range only {
			if c.parts[k] == nil {
				delete(only, k) // released meanwhile
			}
		}
		c.mu.Unlock()
		if err == nil && len(only) > 0 {
			err = errors.New("shards left unsaved") // a forced save covers every shard it can: count it as a failure
		}
		return len(only) == 0, err
	})
	if err != nil {
		return lost, fmt.Errorf("kafka: confirm: %w", err)
	}
	return lost, nil
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
	err := cursor.Retry(ctx, func() (bool, error) {
		if c.b.isAborted() {
			return true, nil
		}
		_, _, err := c.save(ctx, saveReq{})
		if errors.Is(err, errNotStanding) {
			// Another node may be taking the shards over: what this one
			// holds in memory may be stale. Whoever reads them next starts
			// from the last save.
			c.log.Warn("closing without a final save", "err", err)
			return true, nil
		}
		return err == nil, err
	})
	if err != nil {
		return fmt.Errorf("kafka: final save of %q: %w", c.spec.Name, err)
	}
	return nil
}
