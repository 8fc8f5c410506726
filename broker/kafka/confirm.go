// Ack confirmations (broker.AckSaver): AckForSave acks and hands out
// receipts, SaveAcks asks manage for a save now and waits until the saves
// that follow cover the receipts. Saves are the regular fenced ones
// (save.go), so concurrent calls coalesce: manage runs one save at a
// time, commitNow holds one more request, and a partition is in one save
// at a time. save records on each partition what it saved
// (partState.saves) and wakes the waiters (savedLocked).

package kafka

import (
	"context"
	"fmt"

	"github.com/streamgate/streamgate/broker"
	"github.com/streamgate/streamgate/broker/cursor"
)

var (
	_ broker.AckSaver  = (*consumer)(nil)
	_ broker.AckSaving = (*Broker)(nil)
)

// SavesAcks implements broker.AckSaving: every consumer confirms acks.
func (b *Broker) SavesAcks() bool { return true }

// savedLocked wakes the SaveAcks calls waiting for a save to end.
func (c *consumer) savedLocked() {
	if c.savedSig != nil {
		close(c.savedSig)
		c.savedSig = nil
	}
}

// AckForSave implements broker.AckSaver.
func (c *consumer) AckForSave(ids ...string) []broker.AckReceipt {
	out := make([]broker.AckReceipt, 0, len(ids))
	commit := false
	c.mu.Lock()
	for _, id := range ids {
		p, err := decodeIDIn(id, c.topics)
		if err != nil {
			continue
		}
		k := tp{p.topic, p.partition}
		ps := c.parts[k]
		if ps == nil || ps.tr == nil || !ps.tr.Ack(p.offset) {
			continue
		}
		ps.seq++
		c.acks++
		commit = commit || c.acks >= c.b.cfg.CommitEvery
		out = append(out, broker.AckReceipt{ID: id, Shard: k.shard(), Pos: p.offset})
	}
	c.mu.Unlock()
	if commit {
		signal(c.commitNow)
	}
	return out
}

// ackWait is one receipt SaveAcks watches: the partition and tracker that
// took the ack, and the saves begun before the call (their failures do
// not count: they may have been snapshots from before the ack).
type ackWait struct {
	ps   *partState
	tr   *cursor.Tracker
	from uint64
}

// SaveAcks implements broker.AckSaver.
func (c *consumer) SaveAcks(ctx context.Context, rs []broker.AckReceipt) []error {
	errs := make([]error, len(rs))
	waits := make([]ackWait, len(rs))
	c.mu.Lock()
	for i, r := range rs {
		ps := c.parts[tp{r.Shard.Topic, r.Shard.Index}]
		if ps == nil || ps.tr == nil {
			errs[i] = fmt.Errorf("%w: shard %s/%d is not held", broker.ErrAckVoid, r.Shard.Topic, r.Shard.Index)
			continue
		}
		waits[i] = ackWait{ps: ps, tr: ps.tr, from: ps.saves.Begun()}
	}
	c.mu.Unlock()
	done := make([]bool, len(rs))
	err := cursor.AwaitSaves(ctx, &c.mu, &c.savedSig,
		func() bool { return c.settleLocked(rs, waits, errs, done) },
		func() { signal(c.commitNow) }) // manage saves what changed; a save in flight is waited for
	if err != nil {
		for i := range rs {
			if errs[i] == nil && !done[i] {
				errs[i] = fmt.Errorf("%w: the save did not end in time: %w", broker.ErrUnavailable, err)
			}
		}
	}
	return errs
}

// settleLocked decides the receipts it can and says whether some wait.
func (c *consumer) settleLocked(rs []broker.AckReceipt, waits []ackWait, errs []error, done []bool) (pending bool) {
	standing := c.spec.Standing == nil || c.spec.Standing()
	for i, r := range rs {
		if errs[i] != nil || done[i] {
			continue
		}
		w := waits[i]
		k := tp{r.Shard.Topic, r.Shard.Index}
		switch {
		case w.ps.saves.Covers(w.tr, r.Pos):
			done[i] = true
		case c.parts[k] != w.ps || w.ps.tr != w.tr || !w.tr.Acked(r.Pos):
			errs[i] = fmt.Errorf("%w: shard %s/%d was lost or reset before its position was saved", broker.ErrAckVoid, k.topic, k.partition)
		case w.ps.saves.FailedAfter(w.from) != nil:
			errs[i] = fmt.Errorf("%w: saving shard %s/%d: %w", broker.ErrUnavailable, k.topic, k.partition, translate(w.ps.saves.FailedAfter(w.from)))
		case c.closed:
			errs[i] = fmt.Errorf("%w: the consumer closed before the position was saved", broker.ErrUnavailable)
		case !standing:
			errs[i] = fmt.Errorf("%w: %w", broker.ErrUnavailable, errNotStanding)
		default:
			pending = true
		}
	}
	return pending
}
