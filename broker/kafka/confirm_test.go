package kafka

import (
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/streamgate/streamgate/broker/brokertest"
)

// TestConfirmConformance runs the ack confirmation conformance subtests
// (broker.AckSaver) against one kfake broker.
func TestConfirmConformance(t *testing.T) {
	kf, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	t.Cleanup(kf.Close)
	brokertest.RunAckSaver(t, &conformance{kf: kf})
}
