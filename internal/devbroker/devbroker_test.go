package devbroker

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func TestDevbroker_AdvertisesTheGivenHostAndCreatesTopics(t *testing.T) {
	cfg := DefaultConfig()
	cfg.AdvertiseHost = "broker.internal"
	cfg.Topics = []string{"a", "b"}
	cfg.Partitions = 3
	b, err := Start(cfg)
	require.NoError(t, err)
	defer b.Close()

	cl, err := kgo.NewClient(kgo.SeedBrokers(b.ListenAddr()))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl)
	require.NoError(t, err)
	require.Len(t, resp.Brokers, 1)
	require.Equal(t, "broker.internal", resp.Brokers[0].Host)
	require.EqualValues(t, b.Port(), resp.Brokers[0].Port)
	parts := map[string]int{}
	for _, tp := range resp.Topics {
		parts[*tp.Topic] = len(tp.Partitions)
	}
	require.Equal(t, map[string]int{"a": 3, "b": 3}, parts)
}

func TestDevbroker_ConfigErrorsNameTheField(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Partitions = 0
	_, err := Start(cfg)
	require.ErrorContains(t, err, "Partitions")
	cfg = DefaultConfig()
	cfg.Addr = "nonsense"
	_, err = Start(cfg)
	require.ErrorContains(t, err, "Addr")
}
