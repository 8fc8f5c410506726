package kafka

import (
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/streamgate/streamgate/broker/brokertest"
)

var _ brokertest.Backend = (*Broker)(nil)

// TestConformance runs the backend contract's conformance suite against
// one kfake broker.
func TestConformance(t *testing.T) {
	kf, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	t.Cleanup(kf.Close)
	brokertest.Run(t, &conformance{kf: kf})
}

// conformance is the suite's harness: kfake, with faults through its Fault
// API.
type conformance struct {
	kf *kfake.Cluster

	mu     sync.Mutex // guards faults
	faults map[string]*kfake.FaultHandle
}

// KnownBug names the subtests this backend fails, with why; each is a bug
// to fix in this package, after which its line goes.
func (h *conformance) KnownBug(subtest string) string {
	return map[string]string{}[subtest]
}

func (h *conformance) Backend(t *testing.T, o brokertest.Options) brokertest.Backend {
	t.Helper()
	cfg := DefaultConfig(h.kf.ListenAddrs()...)
	cfg.CommitEvery = 1 << 30
	cfg.CommitInterval = time.Hour
	if o.SaveEvery > 0 {
		cfg.CommitEvery = o.SaveEvery
	}
	if o.SaveInterval > 0 {
		cfg.CommitInterval = o.SaveInterval
	}
	if o.MaxBufferedPerShard > 0 {
		cfg.MaxBufferedPerShard = o.MaxBufferedPerShard
	}
	if o.MaxMessageBytes > 0 {
		cfg.MaxMessageBytes = o.MaxMessageBytes
	}
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	b, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(b.Close)
	return b
}

func (h *conformance) CreateTopic(t *testing.T, name string, shards int) {
	t.Helper()
	require.NoError(t, h.kf.CreateTopic(name, int32(shards), nil))
}

func (h *conformance) Crash(t *testing.T, b brokertest.Backend) {
	t.Helper()
	b.(*Broker).Abort()
}

// FetchFault fails every Fetch with UNKNOWN_SERVER_ERROR, which franz-go
// reports from its polls (FACTS.md).
func (h *conformance) FetchFault(t *testing.T, on bool) {
	h.fault("fetch", on, kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Err: kerr.UnknownServerError, Count: -1})
}

// SaveFault fails every offset commit, transactional or not.
func (h *conformance) SaveFault(t *testing.T, on bool) {
	h.fault("save", on, kfake.Fault{Keys: []kmsg.Key{kmsg.TxnOffsetCommit, kmsg.OffsetCommit}, Err: kerr.UnknownServerError, Count: -1})
}

func (h *conformance) fault(name string, on bool, f kfake.Fault) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.faults == nil {
		h.faults = map[string]*kfake.FaultHandle{}
	}
	if old := h.faults[name]; old != nil {
		old.Remove()
		delete(h.faults, name)
	}
	if on {
		h.faults[name] = h.kf.Fault(f)
	}
}

// TestSubscriptionStoreConformance runs the subscription store's
// conformance suite against one kfake broker.
func TestSubscriptionStoreConformance(t *testing.T) {
	kf, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	t.Cleanup(kf.Close)
	brokertest.RunSubscriptions(t, &conformance{kf: kf})
}
