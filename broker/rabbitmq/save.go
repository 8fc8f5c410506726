package rabbitmq

import (
	"context"
	"errors"
	"fmt"

	"github.com/rabbitmq/rabbitmq-stream-go-client/pkg/stream"

	"github.com/streamgate/streamgate/broker"
	"github.com/streamgate/streamgate/broker/cursor"
)

// Saving a consumer's positions: save writes them to the store under each
// shard's claim. manage calls it on its timer and on demand; Release,
// Confirm and Close call it on the caller's goroutine. Two saves of a shard
// never overlap (shardState.saving): the later one is refused with
// errSaveInFlight and retried.

// saveReq says which shards a save covers.
type saveReq struct {
	only  map[posKey]bool // nil: every shard with something to save
	force bool            // save even unchanged positions (to test the fence)
}

// save writes the position of every shard the request covers that changed,
// under its claim. It returns the shards saved and those another reader
// claimed (forgotten now; ShardLost reported unless forced or released).
func (c *consumer) save(ctx context.Context, req saveReq) (saved, lost []posKey, err error) {
	if c.b.aborted.Load() {
		return nil, nil, errAborted
	}
	if c.spec.Standing != nil && !c.spec.Standing() {
		return nil, nil, errNotStanding
	}
	type job struct {
		k       posKey
		holder  string
		at      int64
		acks    int
		counted int
		seq     uint64
		release bool
		above   []int64 // the acks saved above at, for SaveAcks
		round   uint64
		tr      *cursor.Tracker
	}
	var jobs []job
	var recs []record
	skipped := false
	c.mu.Lock()
	for k, ps := range c.parts {
		if ps.tr == nil || (req.only != nil && !req.only[k]) {
			continue
		}
		if !req.force && !ps.unsaved && !ps.tr.Dirty() && !ps.release && ps.seq == ps.savedSeq {
			continue
		}
		if ps.saving {
			skipped = true
			continue
		}
		ps.saving = true
		ps.n++
		pos := startOf(ps.origin)
		at := int64(-1)
		var above []int64
		if ps.resolved {
			var meta cursor.Saved
			at, meta = ps.tr.ToSave()
			pos = position{next: at, meta: meta}
			above = meta.Acked
		}
		jobs = append(jobs, job{k: k, holder: ps.holder, at: at, acks: ps.tr.Acks(), counted: ps.tr.Counted(), seq: ps.seq, release: ps.release,
			above: above, round: ps.saves.Begin(), tr: ps.tr})
		recs = append(recs, record{kind: recSave, key: k, holder: ps.holder, n: ps.n, pos: pos})
	}
	c.mu.Unlock()
	if len(jobs) == 0 {
		if skipped {
			return nil, nil, errSaveInFlight
		}
		return nil, nil, nil
	}
	outs := c.b.store.write(ctx, recs)

	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.savedLocked() // wakes SaveAcks
	total, failed := 0, skipped
	for i, j := range jobs {
		o := outs[i]
		ps := c.parts[j.k]
		if ps != nil {
			ps.saving = false
		}
		if ps == nil || ps.holder != j.holder {
			continue
		}
		switch {
		case o.err != nil:
			failed = true
			ps.saves.Failed(j.round, o.err)
			if err == nil {
				err = fmt.Errorf("saving %s of %q: %w", streamName(shardOf(j.k)), c.spec.Name, o.err)
			}
			continue
		case !o.valid && o.state.holder != j.holder:
			lost = append(lost, j.k)
			c.forgetLocked(j.k)
			if !req.force && !j.release {
				c.eventLocked(j.k, broker.ShardLost, "another node reads this shard now")
			}
			c.log.Warn("another reader has taken the shard; forgetting it", "stream", streamName(shardOf(j.k)))
			continue
		case !o.valid:
			failed = true // superseded by a save of ours from before: save again
			ps.n = max(ps.n, o.state.n)
			continue
		}
		saved = append(saved, j.k)
		if j.at >= 0 {
			ps.saves.Saved(j.tr, j.at, j.above)
			ps.tr.SavedAt(j.at, j.acks, j.counted)
		}
		ps.unsaved = false
		ps.savedSeq = j.seq
		total += j.acks
		if ps.phase == phaseStopped && ps.release && ps.seq == j.seq {
			delete(c.parts, j.k)
			continue
		}
		if ps.phase == phasePaused && ps.tr.Drained(c.b.cfg.MaxBufferedPerShard) {
			ps.phase = phaseFetching
			ps.gen++
			signal(c.kick)
		}
	}
	_ = failed
	c.acks = max(c.acks-total, 0)
	return saved, lost, err
}

// Release implements broker.Consumer.
func (c *consumer) Release(ctx context.Context, shards []broker.ShardID) error {
	only := map[posKey]bool{}
	c.mu.Lock()
	for _, s := range shards {
		k := c.key(s)
		ps := c.parts[k]
		switch {
		case ps == nil:
		case c.assigned[k] || ps.phase != phaseStopped:
			c.mu.Unlock()
			return fmt.Errorf("rabbitmq: release %s: it is assigned", streamName(s))
		case ps.tr == nil:
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
		return fmt.Errorf("rabbitmq: release: %w", err)
	}
	return nil
}

// Confirm implements broker.Consumer.
func (c *consumer) Confirm(ctx context.Context, shards []broker.ShardID) ([]broker.ShardID, error) {
	only := map[posKey]bool{}
	c.mu.Lock()
	for _, s := range shards {
		k := c.key(s)
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
			lost = append(lost, shardOf(k))
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
		return lost, fmt.Errorf("rabbitmq: confirm: %w", err)
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
	defer func() {
		c.mu.Lock()
		var scs []*stream.Consumer
		for _, ps := range c.parts {
			if ps.sc != nil {
				scs = append(scs, ps.sc)
				ps.sc = nil
			}
			ps.gen++
		}
		scs = append(scs, c.orphans...)
		c.orphans = nil
		c.mu.Unlock()
		for _, sc := range scs {
			c.b.unsubscribe(sc)
		}
		c.wg.Wait()
		c.b.mu.Lock()
		delete(c.b.consumers, c)
		c.b.mu.Unlock()
	}()
	err := cursor.Retry(ctx, func() (bool, error) {
		_, _, err := c.save(ctx, saveReq{})
		switch {
		case errors.Is(err, errNotStanding):
			c.log.Warn("closing without a final save", "err", err)
			return true, nil
		case errors.Is(err, errAborted):
			return true, nil
		}
		return err == nil, err
	})
	if err != nil {
		return fmt.Errorf("rabbitmq: final save of %q: %w", c.spec.Name, err)
	}
	return nil
}
