// Saving positions: save writes the position of each partition that needs
// it in a fenced transaction of its own (fence.go). manage calls it (on a
// timer, on demand, after a failure), and Release, Confirm and Close
// (release.go) call it from their callers' goroutines, at once. A
// partition is in one save at a time (partState.saving), so the
// transactions of its fence never overlap: a call that finds a partition
// being saved skips it, and says so (errSaveInFlight) when it had nothing
// else to save.

package kafka

import (
	"context"
	"errors"
	"fmt"

	"github.com/streamgate/streamgate/broker"
	"github.com/streamgate/streamgate/broker/cursor"
)

// errNotStanding: the node's standing is in doubt, so nothing is saved.
var errNotStanding = errors.New("not saving: this node's membership of the cluster is in doubt")

// errSaveInFlight: what was asked is being saved by another call already.
var errSaveInFlight = fmt.Errorf("a save of these positions is in flight: %w", cursor.ErrBusy)

// saveReq says which partitions a save covers.
type saveReq struct {
	only  map[tp]bool // nil: every partition that has something to save
	force bool        // save even unchanged positions (to test the fence)
}

// save saves the position of every partition the request covers that has
// changed, each in a fenced transaction of its own, so that one failing
// partition holds no other. It returns the partitions saved and those
// whose fence another reader has taken (forgotten now; ShardLost is
// reported for them unless the request is forced or they were being
// released), with the first other error.
func (c *consumer) save(ctx context.Context, req saveReq) (savedParts, lost []tp, err error) {
	type job struct {
		k       tp
		f       *fence
		at      int64
		meta    string
		acks    int
		counted int
		seq     uint64
		release bool
		err     error
		above   []int64 // the acks saved above at, for SaveAcks
		round   uint64
		tr      *cursor.Tracker
	}
	if c.spec.Standing != nil && !c.spec.Standing() {
		return nil, nil, errNotStanding
	}
	var jobs []*job
	skipped := false
	c.mu.Lock()
	refresh := c.refresh && req.only == nil
	for k, ps := range c.parts {
		if (req.only != nil && !req.only[k]) || ps.tr == nil || ps.fence == nil {
			continue
		}
		if !req.force && !ps.unsaved && !ps.tr.Dirty() && !ps.release && !refresh {
			continue
		}
		if ps.saving {
			skipped = true // another save of it is in flight: one transaction at a time
			continue
		}
		ps.saving = true
		at, meta := ps.tr.ToSave()
		jobs = append(jobs, &job{k: k, f: ps.fence, at: at, meta: encodeMeta(at, meta), acks: ps.tr.Acks(), counted: ps.tr.Counted(), seq: ps.seq, release: ps.release,
			above: meta.Acked, round: ps.saves.Begin(), tr: ps.tr})
	}
	c.mu.Unlock()
	if len(jobs) == 0 {
		if skipped {
			return nil, nil, errSaveInFlight
		}
		return nil, nil, nil
	}
	byKey := make(map[tp]*job, len(jobs))
	keys := make([]tp, len(jobs))
	for i, j := range jobs {
		byKey[j.k], keys[i] = j, j.k
	}
	parallel(keys, func(k tp) {
		j := byKey[k]
		j.err = fencedCommit(ctx, c.cl, c.group, j.f, j.k, j.at, j.meta)
	})

	resume := map[string][]int32{}
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.savedLocked() // wakes SaveAcks
	total, failed := 0, skipped
	for _, j := range jobs {
		ps := c.parts[j.k]
		if ps != nil {
			ps.saving = false
		}
		if ps == nil || ps.fence != j.f {
			continue // forgotten or loaded again meanwhile
		}
		switch {
		case errors.Is(j.err, errFenced):
			lost = append(lost, j.k)
			c.forgetLocked(j.k)
			if !req.force && !j.release {
				c.eventLocked(j.k, broker.ShardLost, "another node reads this shard now")
			}
			c.log.Warn("another reader has taken the shard; forgetting it", "topic", j.k.topic, "partition", j.k.partition)
			continue
		case j.err != nil:
			failed = true
			ps.saves.Failed(j.round, j.err)
			if err == nil {
				err = fmt.Errorf("saving %s/%d of %q: %w", j.k.topic, j.k.partition, c.group, translate(j.err))
			}
			continue
		}
		savedParts = append(savedParts, j.k)
		ps.saves.Saved(j.tr, j.at, j.above)
		ps.tr.SavedAt(j.at, j.acks, j.counted)
		ps.unsaved = false
		total += j.acks
		if ps.phase == phaseStopped && ps.release && ps.seq == j.seq {
			delete(c.parts, j.k) // every ack applied before Release is in this save
			continue
		}
		if ps.phase == phasePaused && ps.tr.Drained(c.b.cfg.MaxBufferedPerShard) {
			ps.resume()
			resume[j.k.topic] = append(resume[j.k.topic], j.k.partition)
		}
	}
	if refresh && !failed {
		c.refresh = false // only a save that included every position clears it
	}
	c.acks = max(c.acks-total, 0)
	if len(resume) > 0 {
		c.cl.ResumeFetchPartitions(resume)
	}
	return savedParts, lost, err
}

// backoff is the backends' shared retry wait.
var backoff = cursor.Backoff
