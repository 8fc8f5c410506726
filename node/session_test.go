package node

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/broker"
)

// The batch conversion gives each message its own fields, shard name and
// publish time, though they share allocations.
func TestShardNames_ToProtoKeepsEachMessagesFields(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 123456789, time.UTC)
	ds := []broker.Delivery{
		{ID: "a", Shard: broker.ShardID{Topic: "t", Index: 0}, Message: broker.Message{Topic: "t", Key: []byte("k"), Payload: []byte("p0")}, PublishTime: t0},
		{ID: "b", Shard: broker.ShardID{Topic: "t", Index: 0}, Message: broker.Message{Topic: "t", Payload: []byte("p1")}},
		{ID: "c", Shard: broker.ShardID{Topic: "u", Index: 12}, Message: broker.Message{Topic: "u", Payload: []byte("p2"),
			Headers: []broker.Header{{Key: "h", Value: []byte("v")}}}, PublishTime: t0.Add(time.Second)},
	}
	var msgs []outgoing
	for i := range ds {
		msgs = append(msgs, outgoing{d: &ds[i], attempt: uint32(i + 1)})
	}
	var names shardNames
	pms := names.toProto(msgs)
	require.Len(t, pms, 3)
	for i, pm := range pms {
		require.Equal(t, ds[i].ID, pm.GetId())
		require.Equal(t, ds[i].Message.Topic, pm.GetTopic())
		require.Equal(t, ds[i].Message.Payload, pm.GetPayload())
		require.EqualValues(t, i+1, pm.GetDeliveryAttempt())
	}
	require.Equal(t, []string{"t/0", "t/0", "u/12"}, []string{pms[0].GetShard(), pms[1].GetShard(), pms[2].GetShard()})
	require.True(t, pms[0].GetPublishTime().AsTime().Equal(t0))
	require.Nil(t, pms[1].GetPublishTime(), "no time: none sent")
	require.True(t, pms[2].GetPublishTime().AsTime().Equal(t0.Add(time.Second)))
	require.Equal(t, []byte("k"), pms[0].GetKey())
	require.Len(t, pms[2].GetHeaders(), 1)
	require.Equal(t, "h", pms[2].GetHeaders()[0].GetKey())
	require.Equal(t, "t/0", names.of(broker.ShardID{Topic: "t", Index: 0}), "after another shard")
}
