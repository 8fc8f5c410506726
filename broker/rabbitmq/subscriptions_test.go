package rabbitmq

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/streamgate/streamgate/broker"
	"github.com/streamgate/streamgate/internal/leaktest"
)

// TestSubscriptionStoreCloseStopsItsGoroutines: Close ends the store's
// goroutine, its producer and its reader.
func TestSubscriptionStoreCloseStopsItsGoroutines(t *testing.T) {
	srv := requireServer(t)
	ignore := goleak.IgnoreCurrent()
	b, err := New(DefaultConfig(srv.URI()))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	name := newTopic(t, b, 1) // a name unique to this run
	_, err = b.CreateSubscription(ctx, broker.SubscriptionConfig{Name: name, Topics: []string{name}})
	require.NoError(t, err)
	b.Close()
	require.NoError(t, leaktest.Eventually(leaktest.Patience, ignore))
}
