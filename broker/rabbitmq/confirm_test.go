package rabbitmq

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/broker/brokertest"
	"github.com/streamgate/streamgate/internal/rabbitmqtest"
)

// TestConfirmConformance runs the ack confirmation conformance subtests
// (broker.AckSaver) against the test binary's rabbitmq-server; the
// harness injects no faults, so the save failure subtest is skipped.
func TestConfirmConformance(t *testing.T) {
	srv := rabbitmqtest.Require(t)
	admin, err := New(DefaultConfig(srv.URI()))
	require.NoError(t, err)
	defer admin.Close()
	brokertest.RunAckSaver(t, &conformance{uri: srv.URI(), admin: admin})
}
