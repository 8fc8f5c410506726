package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/streamgate/streamgate/broker"
)

// The rules a View applies, record by record, in log order. They depend
// only on the records before, so every reader of one log agrees.
//
//   - create: valid when the name is not live. Version: its position+1.
//   - update, delete: valid when the name is live and Expect is its
//     version.
//   - restate: valid when it states the name's current version and
//     liveness; it changes nothing.
//   - tombstone (no value; compacted logs only): valid when the name is
//     not live; the view forgets the name.
//   - sync: always valid, changes nothing.
//
// Compaction. A compacted log (Kafka's cleanup.policy=compact) keeps only
// the last record of each key, so the last record of a key must state the
// key's state on its own. A valid create, update or delete does (it
// carries the settings and times, and its position gives the version). A
// rejected record does not, so its writer follows it with a restate of the
// current state, or a tombstone when the name is not live (Store.fixup),
// and checks that this one was valid, else writes another. A reader whose
// log shows a gap (a position skipped: compaction removed records) may
// meet a name first at any kind of record: it takes that record's state as
// given, "assumed", and from then on every restate or tombstone of the
// name replaces its state, because the restating writer checked it against
// the whole log; compare-and-set records apply as usual. Every writer
// follows its rejected record with restates until one is valid, so after
// the last of them the assumed entry is the state every reader has. The
// entry's accurate flag says whether the name's last record so far states
// the entry.
//
// Residual risk (written down, not handled): if a writer dies between a
// rejected record and its restate, the rejected record stays the last of
// its key; every reader that read it in order ignores it, but once
// compaction has removed the records before it, a reader that starts then
// takes it as the state, until the next restate or tombstone of that
// subscription (a compare-and-set that held for the others may fail
// against it meanwhile). The Kafka topic's min.compaction.lag.ms keeps
// every record for a day, and every Store restates such names after its
// first catch-up (Store.repair), so the window is a writer crash in the
// milliseconds between two writes with no node starting within a day.
// Also, between a rejected record (or a stale restate) and the restate
// after it, a reader that met the name after a gap may briefly show the
// wrong state.

// entry is the view of one name.
type entry struct {
	live bool
	cfg  broker.SubscriptionConfig // Name, Version, Created, Updated set
	// assumed: first taken from a record without a compare-and-set check
	// (the log had a gap before it); restates and tombstones replace it.
	assumed bool
	// accurate: the name's last record states this entry on its own.
	accurate bool
}

// Outcome is what applying one write gave: whether it took effect, and
// the name's state right after it.
type Outcome struct {
	Valid  bool
	Live   bool
	Config broker.SubscriptionConfig // when Live
}

// View is the state of every subscription as a log's records, applied in
// order, make it. Apply is called by the backend's reader goroutine, in
// log order; every method is safe for concurrent use.
type View struct {
	compacting bool
	log        *slog.Logger
	nonce      string

	mu      sync.Mutex // guards the fields below
	entries map[string]*entry
	next    int64 // the position after the last applied record
	gap     bool  // a position was skipped: records were removed
	counter uint64
	waiters map[string]chan Outcome // by token: writes not applied yet
	moved   chan struct{}           // closed and replaced when next advances
	closed  error
	changes chan struct{} // capacity 1, coalesced
}

// NewView makes an empty view of a log that starts at position 0.
// compacting: the log keeps only each key's last record, so writers
// append restates and tombstones, and deleted names are kept until their
// tombstone. logger may be nil.
func NewView(compacting bool, logger *slog.Logger) *View {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var n [8]byte
	_, _ = rand.Read(n[:])
	return &View{
		compacting: compacting,
		log:        logger,
		nonce:      hex.EncodeToString(n[:]),
		entries:    map[string]*entry{},
		waiters:    map[string]chan Outcome{},
		moved:      make(chan struct{}),
		changes:    make(chan struct{}, 1),
	}
}

// Apply applies the record at pos, keyed by key ("" for logs without
// keys); an empty value is a tombstone. Positions already applied are
// ignored, so a reader may deliver a record twice (after a reconnect). It
// never blocks.
func (v *View) Apply(pos int64, key string, value []byte) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if pos < v.next {
		return
	}
	if pos > v.next {
		v.gap = true
	}
	v.next = pos + 1
	close(v.moved)
	v.moved = make(chan struct{})
	if len(value) == 0 {
		v.tombstoneLocked(key)
		return
	}
	rec, err := Decode(value)
	if err == nil && key != "" && rec.Op != OpSync && rec.Name != key {
		err = fmt.Errorf("%w: record of %q under the key %q", errBadRecord, rec.Name, key)
	}
	if err != nil {
		v.log.Warn("ignoring an unreadable record of the subscription log", "position", pos, "err", err)
		if e := v.entries[key]; e != nil {
			e.accurate = false // a compacted log would keep only this
		}
		return
	}
	out := Outcome{Valid: true}
	if rec.Op != OpSync {
		out = v.applyLocked(pos, &rec)
	}
	if w := v.waiters[rec.Token]; w != nil && rec.Token != "" {
		w <- out // capacity 1, one send
		delete(v.waiters, rec.Token)
	}
}

func (v *View) applyLocked(pos int64, rec *Record) Outcome {
	e := v.entries[rec.Name]
	switch {
	case e == nil && (rec.Op == OpCreate || v.gap):
		// New, or met after a gap: whatever came before was removed.
		e = &entry{assumed: rec.Op != OpCreate || v.gap}
		v.entries[rec.Name] = e
		e.set(pos, rec)
		return v.tookLocked(e)
	case e == nil:
		// Nothing to update, delete or restate, in a log without gaps.
		if v.compacting {
			v.entries[rec.Name] = &entry{} // not live, not accurate: its writer sends a tombstone
		}
		return Outcome{}
	case e.assumed && rec.Op == OpRestate:
		e.set(pos, rec)
		return v.tookLocked(e)
	case rec.Op == OpRestate:
		e.accurate = rec.Version == e.cfg.Version && rec.Live == e.live
		return e.outcome(e.accurate)
	}
	valid := !e.live // create
	if rec.Op != OpCreate {
		valid = e.live && rec.Expect == e.cfg.Version
	}
	if !valid {
		e.accurate = false
		return e.outcome(false)
	}
	created := e.cfg.Created
	e.set(pos, rec)
	if rec.Op != OpCreate {
		e.cfg.Created = created // the entry's own history knows it best
	}
	// An assumed entry stays assumed: the check may have held against a
	// state that was wrong (a stale restate, taken as given), so a later
	// restate or tombstone must still be able to correct it.
	return v.tookLocked(e)
}

// tookLocked finishes a record that took effect on e.
func (v *View) tookLocked(e *entry) Outcome {
	e.accurate = true
	signal(v.changes)
	out := e.outcome(true)
	if !e.live && !v.compacting {
		delete(v.entries, e.cfg.Name) // nothing else will tell of it
	}
	return out
}

// set makes e the state rec states (rec at pos).
func (e *entry) set(pos int64, rec *Record) {
	cfg := broker.SubscriptionConfig{Name: rec.Name, Version: pos + 1, Created: rec.Created, Updated: rec.Updated}
	live := rec.Op != OpDelete
	if rec.Op == OpRestate {
		cfg.Version, live = rec.Version, rec.Live
	}
	if rec.Settings != nil {
		_ = rec.Settings.apply(&cfg) // checked by Decode
	}
	e.live, e.cfg = live, cfg
}

func (e *entry) outcome(valid bool) Outcome {
	o := Outcome{Valid: valid, Live: e.live}
	if e.live {
		o.Config = clone(e.cfg)
	}
	return o
}

// tombstoneLocked applies a tombstone of key: the name is no longer live,
// and the view forgets it. Over a live name it is rejected, unless the
// name was assumed (see the rules above).
func (v *View) tombstoneLocked(key string) {
	e := v.entries[key]
	switch {
	case e == nil:
	case !e.live || e.assumed:
		delete(v.entries, key)
		if e.live {
			signal(v.changes)
		}
	default:
		e.accurate = false
	}
}

func clone(cfg broker.SubscriptionConfig) broker.SubscriptionConfig {
	cfg.Topics = slices.Clone(cfg.Topics)
	return cfg
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Changes receives a value (capacity 1, coalesced) when a subscription was
// created, changed or deleted.
func (v *View) Changes() <-chan struct{} { return v.changes }

// Next is the position after the last record applied.
func (v *View) Next() int64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.next
}

// WaitNext waits until the view has applied every position below end.
func (v *View) WaitNext(ctx context.Context, end int64) error {
	for {
		v.mu.Lock()
		next, moved, closed := v.next, v.moved, v.closed
		v.mu.Unlock()
		switch {
		case next >= end:
			return nil
		case closed != nil:
			return closed
		}
		select {
		case <-moved:
		case <-ctx.Done():
			return fmt.Errorf("%w: the subscription log was read up to position %d of %d: %w", broker.ErrUnavailable, next, end, ctx.Err())
		}
	}
}

// register makes a token for a write and the channel its outcome comes on.
func (v *View) register() (string, <-chan Outcome, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed != nil {
		return "", nil, v.closed
	}
	v.counter++
	tok := v.nonce + "-" + strconv.FormatUint(v.counter, 10)
	w := make(chan Outcome, 1)
	v.waiters[tok] = w
	return tok, w, nil
}

func (v *View) forget(tok string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.waiters, tok)
}

// Close fails every write waiting for its outcome, and every later one,
// with err (the backend's ErrClosed); reads still answer from the view.
func (v *View) Close(err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed != nil {
		return
	}
	v.closed = err
	close(v.moved)
	v.moved = make(chan struct{})
	for tok, w := range v.waiters {
		close(w)
		delete(v.waiters, tok)
	}
}

// get returns a copy of name's entry.
func (v *View) get(name string) (entry, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	e := v.entries[name]
	if e == nil {
		return entry{}, false
	}
	c := *e
	c.cfg = clone(e.cfg)
	return c, true
}

// list returns every live subscription, sorted by name.
func (v *View) list() []broker.SubscriptionConfig {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []broker.SubscriptionConfig
	for _, e := range v.entries {
		if e.live {
			out = append(out, clone(e.cfg))
		}
	}
	slices.SortFunc(out, func(a, b broker.SubscriptionConfig) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// misstated lists the names whose last record does not state their
// state, leaving out assumed ones.
func (v *View) misstated() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []string
	for name, e := range v.entries {
		if !e.accurate && !e.assumed {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}
