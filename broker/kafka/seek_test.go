package kafka

import (
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/streamgate/streamgate/broker/brokertest"
)

// TestSeekConformance runs the broker.Seeker conformance subtests against
// one kfake broker.
func TestSeekConformance(t *testing.T) {
	kf, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	t.Cleanup(kf.Close)
	brokertest.RunSeek(t, &conformance{kf: kf})
}
