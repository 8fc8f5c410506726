package rabbitmq

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/broker/brokertest"
	"github.com/streamgate/streamgate/internal/rabbitmqtest"
)

// TestSeekConformance runs the broker.Seeker conformance subtests against
// the test binary's rabbitmq-server.
func TestSeekConformance(t *testing.T) {
	srv := rabbitmqtest.Require(t)
	admin, err := New(DefaultConfig(srv.URI()))
	require.NoError(t, err)
	t.Cleanup(admin.Close)
	brokertest.RunSeek(t, &conformance{uri: srv.URI(), admin: admin})
}
