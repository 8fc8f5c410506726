package node_test

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/broker"
	"github.com/streamgate/streamgate/client"
	"github.com/streamgate/streamgate/node"
)

// fakeStore is an in-memory broker.SubscriptionStore for the node's
// subscription tests: compare-and-set writes under one mutex, one global
// version counter, and a coalesced change signal, as the contract asks.
type fakeStore struct {
	mu      sync.Mutex // guards the fields below
	subs    map[string]broker.SubscriptionConfig
	version int64
	creates int // CreateSubscription calls
	// unseen are subscriptions another node stored that this node's view
	// does not hold yet: Get does not find them, and a Create fails with
	// ErrSubscriptionExists (and the view takes them in then).
	unseen  map[string]broker.SubscriptionConfig
	changes chan struct{} // capacity 1
}

var _ broker.SubscriptionStore = (*fakeStore)(nil)

func newFakeStore() *fakeStore {
	return &fakeStore{subs: map[string]broker.SubscriptionConfig{}, unseen: map[string]broker.SubscriptionConfig{}, changes: make(chan struct{}, 1)}
}

// storedElsewhere stores cfg as another node would, unseen here until a
// Create runs into it.
func (f *fakeStore) storedElsewhere(cfg broker.SubscriptionConfig) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.version++
	cfg.Version, cfg.Created, cfg.Updated = f.version, time.Now(), time.Now()
	f.unseen[cfg.Name] = cfg
}

func (f *fakeStore) createCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.creates
}

func (f *fakeStore) changedLocked() {
	select {
	case f.changes <- struct{}{}:
	default:
	}
}

func (f *fakeStore) CreateSubscription(_ context.Context, cfg broker.SubscriptionConfig) (broker.SubscriptionConfig, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.creates++
	if c, ok := f.unseen[cfg.Name]; ok {
		delete(f.unseen, cfg.Name)
		f.subs[cfg.Name] = c
		f.changedLocked()
		return broker.SubscriptionConfig{}, broker.ErrSubscriptionExists
	}
	if _, ok := f.subs[cfg.Name]; ok {
		return broker.SubscriptionConfig{}, broker.ErrSubscriptionExists
	}
	f.version++
	cfg.Topics = slices.Clone(cfg.Topics)
	now := time.Now()
	cfg.Version, cfg.Created, cfg.Updated = f.version, now, now
	f.subs[cfg.Name] = cfg
	f.changedLocked()
	return cfg, nil
}

func (f *fakeStore) GetSubscription(_ context.Context, name string) (broker.SubscriptionConfig, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cfg, ok := f.subs[name]
	if !ok {
		return cfg, broker.ErrSubscriptionNotFound
	}
	return cfg, nil
}

func (f *fakeStore) ListSubscriptions(context.Context) ([]broker.SubscriptionConfig, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []broker.SubscriptionConfig
	for _, c := range f.subs {
		out = append(out, c)
	}
	slices.SortFunc(out, func(x, y broker.SubscriptionConfig) int { return cmp.Compare(x.Name, y.Name) })
	return out, nil
}

func (f *fakeStore) UpdateSubscription(_ context.Context, cfg broker.SubscriptionConfig) (broker.SubscriptionConfig, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, ok := f.subs[cfg.Name]
	switch {
	case !ok:
		return cfg, broker.ErrSubscriptionNotFound
	case cfg.Version != 0 && cfg.Version != cur.Version:
		return cfg, broker.ErrVersionMismatch
	}
	f.version++
	cfg.Version, cfg.Created, cfg.Updated = f.version, cur.Created, time.Now()
	f.subs[cfg.Name] = cfg
	f.changedLocked()
	return cfg, nil
}

func (f *fakeStore) DeleteSubscription(_ context.Context, name string, version int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, ok := f.subs[name]
	switch {
	case !ok:
		return broker.ErrSubscriptionNotFound
	case version != 0 && version != cur.Version:
		return broker.ErrVersionMismatch
	}
	delete(f.subs, name)
	f.changedLocked()
	return nil
}

func (f *fakeStore) SubscriptionChanges() <-chan struct{} { return f.changes }

// storeBackend is the fake backend with a subscription store.
type storeBackend struct {
	*fakeBackend
	*fakeStore
}

// logRecorder keeps the node's log messages, to wait for one.
type logRecorder struct {
	mu   sync.Mutex // guards msgs
	msgs []string
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }

func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	msg := r.Message
	r.Attrs(func(a slog.Attr) bool {
		msg += fmt.Sprintf(" %s=%v", a.Key, a.Value)
		return true
	})
	l.mu.Lock()
	l.msgs = append(l.msgs, msg)
	l.mu.Unlock()
	return nil
}

func (l *logRecorder) has(msg string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Contains(l.msgs, msg)
}

// storeNode is a fake node whose backend keeps subscriptions.
type storeNode struct {
	*fakeNode
	store *fakeStore
	log   *logRecorder
}

// startStoreNode starts a node on the fake backend with a fake store (as
// startFakeNodeIn does without one).
func startStoreNode(t *testing.T, topics map[string]int, cfg func(*node.Config)) *storeNode {
	t.Helper()
	fb := newFakeBackend(topics)
	t.Cleanup(fb.Close)
	st := newFakeStore()
	c := node.DefaultConfig()
	c.NodeName = "fake-node"
	if cfg != nil {
		cfg(&c)
	}
	rec := &logRecorder{}
	reg := prometheus.NewRegistry()
	srv, err := node.NewServer(c, storeBackend{fb, st}, node.Options{Registry: reg, Logger: slog.New(rec)})
	require.NoError(t, err)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	n := &fakeNode{t: t, fb: fb, srv: srv, reg: reg, served: make(chan error, 1)}
	go func() { n.served <- srv.Serve(lis, nil) }()
	t.Cleanup(n.shutdown)
	n.cl, err = client.Dial(lis.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = n.cl.Close() })
	return &storeNode{fakeNode: n, store: st, log: rec}
}
