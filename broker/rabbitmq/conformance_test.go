package rabbitmq

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/broker/brokertest"
	"github.com/streamgate/streamgate/internal/rabbitmqtest"
)

var _ brokertest.Backend = (*Broker)(nil)

// TestConformance runs the backend contract's conformance suite against
// the test binary's rabbitmq-server. The harness injects no faults, so the
// suite skips its Faults subtests.
func TestConformance(t *testing.T) {
	srv := rabbitmqtest.Require(t)
	admin, err := New(DefaultConfig(srv.URI()))
	require.NoError(t, err)
	defer admin.Close()
	brokertest.Run(t, &conformance{uri: srv.URI(), admin: admin})
}

// conformance is the suite's harness: a real server, no fault injection.
type conformance struct {
	uri   string
	admin *Broker // creates the topics: one client, not one per topic
}

func (h *conformance) Backend(t *testing.T, o brokertest.Options) brokertest.Backend {
	t.Helper()
	cfg := DefaultConfig(h.uri)
	cfg.SaveEvery = 1 << 30
	cfg.SaveInterval = time.Hour
	if o.SaveEvery > 0 {
		cfg.SaveEvery = o.SaveEvery
	}
	if o.SaveInterval > 0 {
		cfg.SaveInterval = o.SaveInterval
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
	require.NoError(t, h.admin.CreateTopic(context.Background(), name, shards))
}

func (h *conformance) Crash(t *testing.T, b brokertest.Backend) {
	t.Helper()
	b.(*Broker).Abort()
}

// TestSubscriptionStoreConformance runs the subscription store's
// conformance suite against the test binary's rabbitmq-server.
func TestSubscriptionStoreConformance(t *testing.T) {
	srv := rabbitmqtest.Require(t)
	admin, err := New(DefaultConfig(srv.URI()))
	require.NoError(t, err)
	defer admin.Close()
	brokertest.RunSubscriptions(t, &conformance{uri: srv.URI(), admin: admin})
}
