package registry

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/streamgate/streamgate/broker"
)

// Log is a backend's subscription log: one ordered log that the backend
// reads, from its start, into the Store's View (View.Apply) on a goroutine
// of its own.
type Log interface {
	// Append writes value under key and returns once the log has taken it
	// (it may not be applied yet), with its position when the log tells
	// it, else -1. A nil value is a tombstone (asked only of compacting
	// logs). Errors wrap a broker sentinel.
	Append(ctx context.Context, key string, value []byte) (int64, error)
}

// Ender is a Log that can tell its end: the position after its last
// record. Without it, the Store catches up by appending a sync record and
// waiting for it.
type Ender interface {
	End(ctx context.Context) (int64, error)
}

// Options configure a Store.
type Options struct {
	// WriteTimeout bounds one write, from append to seeing it applied,
	// and a catch-up with the log. Default 10s.
	WriteTimeout time.Duration
	// Logger receives warnings. Default: discarded.
	Logger *slog.Logger
}

// maxRaces bounds how often a write with no expected version (any) is
// tried again after another write of the same subscription came first.
const maxRaces = 8

var _ broker.SubscriptionStore = (*Store)(nil)

// Store implements broker.SubscriptionStore on a Log and its View. A
// write reads the view, appends a record that says which version it
// replaces, and waits until the view has applied that record, which tells
// whether it took effect: of two writes of one subscription that expect
// the same version, the one earlier in the log wins, on every reader.
// Reads answer from the view, once it has caught up with the log as it was
// at the first read (so a new process never answers "not found" from a
// view that has not read yet).
type Store struct {
	log   Log
	view  *View
	opts  Options
	ready atomic.Bool
	now   func() time.Time
}

// NewStore makes a Store that writes to log and reads view, which the
// backend fills from log.
func NewStore(log Log, view *View, opts Options) *Store {
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Store{log: log, view: view, opts: opts, now: time.Now}
}

// catchUp waits until the view has applied everything the log holds now.
func (s *Store) catchUp(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.WriteTimeout)
	defer cancel()
	if e, ok := s.log.(Ender); ok {
		end, err := e.End(ctx)
		if err != nil {
			return err
		}
		return s.view.WaitNext(ctx, end)
	}
	_, err := s.write(ctx, &Record{Op: OpSync})
	return err
}

// ready makes sure the view has caught up once.
func (s *Store) ensureReady(ctx context.Context) error {
	if s.ready.Load() {
		return nil
	}
	if err := s.catchUp(ctx); err != nil {
		return fmt.Errorf("reading the stored subscriptions: %w", err)
	}
	if !s.ready.Swap(true) {
		s.repair(ctx)
	}
	return nil
}

// repair runs fixup, once per process after the first catch-up, for every
// name whose last record does not state its state: a writer died between
// a rejected record and its restate. Done before compaction removes the
// records before it (min.compaction.lag.ms), it closes that window.
// Assumed entries are left alone: this view may not know their truth.
func (s *Store) repair(ctx context.Context) {
	if !s.view.compacting {
		return
	}
	for _, name := range s.view.misstated() {
		s.opts.Logger.Info("restating a subscription whose last record was rejected", "subscription", name)
		s.fixup(ctx, name)
	}
}

// write appends rec and returns its outcome as the view applied it.
func (s *Store) write(ctx context.Context, rec *Record) (Outcome, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.WriteTimeout)
	defer cancel()
	tok, wait, err := s.view.register()
	if err != nil {
		return Outcome{}, err
	}
	rec.Token = tok
	if _, err := s.log.Append(ctx, rec.Name, Encode(rec)); err != nil {
		s.view.forget(tok)
		return Outcome{}, fmt.Errorf("writing to the subscription log: %w", err)
	}
	select {
	case o, ok := <-wait:
		if !ok {
			return Outcome{}, fmt.Errorf("%w: the outcome of a subscription write is unknown", broker.ErrClosed)
		}
		return o, nil
	case <-ctx.Done():
		s.view.forget(tok)
		return Outcome{}, fmt.Errorf("%w: the subscription log did not show the write back (its outcome is unknown): %w", broker.ErrUnavailable, ctx.Err())
	}
}

// tombstone appends a tombstone of name and waits until the view applied
// it.
func (s *Store) tombstone(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.WriteTimeout)
	defer cancel()
	pos, err := s.log.Append(ctx, name, nil)
	if err != nil || pos < 0 {
		return err
	}
	return s.view.WaitNext(ctx, pos+1)
}

// fixup makes the last record of name state name's state, on a
// compacting log (see the rules in view.go): after a rejected record, a
// restate of the live state or a tombstone, until one was valid.
func (s *Store) fixup(ctx context.Context, name string) {
	if !s.view.compacting {
		return
	}
	for range maxRaces {
		e, ok := s.view.get(name)
		if !ok || e.accurate {
			return
		}
		var err error
		if e.live {
			_, err = s.write(ctx, &Record{
				Op: OpRestate, Name: name, Version: e.cfg.Version, Live: true,
				Settings: SettingsOf(e.cfg), Created: e.cfg.Created, Updated: e.cfg.Updated,
			})
		} else {
			err = s.tombstone(ctx, name)
		}
		if err != nil {
			s.opts.Logger.Warn("restating a subscription after a rejected write failed; its log record may mislead readers of the compacted log", "subscription", name, "err", err)
			return
		}
	}
}

// CreateSubscription implements broker.SubscriptionStore.
func (s *Store) CreateSubscription(ctx context.Context, cfg broker.SubscriptionConfig) (broker.SubscriptionConfig, error) {
	if err := s.ensureReady(ctx); err != nil {
		return broker.SubscriptionConfig{}, err
	}
	if e, ok := s.view.get(cfg.Name); ok && e.live {
		return broker.SubscriptionConfig{}, fmt.Errorf("%w: %q", broker.ErrSubscriptionExists, cfg.Name)
	}
	now := s.now().UTC()
	o, err := s.write(ctx, &Record{Op: OpCreate, Name: cfg.Name, Settings: SettingsOf(cfg), Created: now, Updated: now})
	if err != nil {
		return broker.SubscriptionConfig{}, err
	}
	if !o.Valid {
		s.fixup(ctx, cfg.Name)
		return broker.SubscriptionConfig{}, fmt.Errorf("%w: %q", broker.ErrSubscriptionExists, cfg.Name)
	}
	return o.Config, nil
}

// GetSubscription implements broker.SubscriptionStore.
func (s *Store) GetSubscription(ctx context.Context, name string) (broker.SubscriptionConfig, error) {
	if err := s.ensureReady(ctx); err != nil {
		return broker.SubscriptionConfig{}, err
	}
	if e, ok := s.view.get(name); ok && e.live {
		return e.cfg, nil
	}
	return broker.SubscriptionConfig{}, fmt.Errorf("%w: %q", broker.ErrSubscriptionNotFound, name)
}

// ListSubscriptions implements broker.SubscriptionStore.
func (s *Store) ListSubscriptions(ctx context.Context) ([]broker.SubscriptionConfig, error) {
	if err := s.ensureReady(ctx); err != nil {
		return nil, err
	}
	return s.view.list(), nil
}

// UpdateSubscription implements broker.SubscriptionStore.
func (s *Store) UpdateSubscription(ctx context.Context, cfg broker.SubscriptionConfig) (broker.SubscriptionConfig, error) {
	var out broker.SubscriptionConfig
	err := s.change(ctx, cfg.Name, cfg.Version, func(e entry) *Record {
		return &Record{Op: OpUpdate, Name: cfg.Name, Settings: SettingsOf(cfg), Created: e.cfg.Created, Updated: s.now().UTC()}
	}, func(o Outcome) { out = o.Config })
	return out, err
}

// DeleteSubscription implements broker.SubscriptionStore. On a compacting
// log the delete record is followed by a tombstone, so that compaction
// can drop the name.
func (s *Store) DeleteSubscription(ctx context.Context, name string, version int64) error {
	err := s.change(ctx, name, version, func(e entry) *Record {
		return &Record{Op: OpDelete, Name: name, Created: e.cfg.Created, Updated: s.now().UTC()}
	}, func(Outcome) {})
	if err != nil || !s.view.compacting {
		return err
	}
	if err := s.tombstone(ctx, name); err != nil {
		// The delete stands; only compaction keeps its record.
		s.opts.Logger.Warn("writing the tombstone of a deleted subscription failed", "subscription", name, "err", err)
		return nil
	}
	s.fixup(ctx, name) // created again between the delete and its tombstone
	return nil
}

// change is an update or a delete of name: compare-and-set on version, or
// on whatever version the view has when version is 0 (tried again, up to
// maxRaces, when another write came first).
func (s *Store) change(ctx context.Context, name string, version int64, mk func(entry) *Record, took func(Outcome)) error {
	if err := s.ensureReady(ctx); err != nil {
		return err
	}
	notFound := func() error { return fmt.Errorf("%w: %q", broker.ErrSubscriptionNotFound, name) }
	mismatch := func(stored int64) error {
		return fmt.Errorf("%w: %q is at version %d, not %d", broker.ErrVersionMismatch, name, stored, version)
	}
	caughtUp := false
	for race := 0; ; race++ {
		e, ok := s.view.get(name)
		if (!ok || !e.live || (version != 0 && version > e.cfg.Version)) && !caughtUp {
			// The caller may know of a change this view has not applied
			// yet (it read another node's view): catch up first.
			if err := s.catchUp(ctx); err != nil {
				return err
			}
			caughtUp = true
			continue
		}
		switch {
		case !ok || !e.live:
			return notFound()
		case version != 0 && version != e.cfg.Version:
			return mismatch(e.cfg.Version)
		}
		rec := mk(e)
		rec.Expect = e.cfg.Version
		o, err := s.write(ctx, rec)
		if err != nil {
			return err
		}
		if o.Valid {
			took(o)
			return nil
		}
		s.fixup(ctx, name)
		switch {
		case !o.Live:
			return notFound()
		case version != 0:
			return mismatch(o.Config.Version)
		case race+1 >= maxRaces:
			return fmt.Errorf("%w: %q changed under %d writes in a row; try again", broker.ErrVersionMismatch, name, maxRaces)
		}
	}
}

// SubscriptionChanges implements broker.SubscriptionStore.
func (s *Store) SubscriptionChanges() <-chan struct{} { return s.view.Changes() }
