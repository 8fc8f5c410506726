package node

import (
	"testing"
	"time"
	"unsafe"

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
			Headers: []broker.Header{{Key: "h", Value: []byte("v")}, {Key: "bad\xffkey", Value: []byte("\xff")}}}, PublishTime: t0.Add(time.Second)},
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
	require.Len(t, pms[2].GetHeaders(), 2)
	require.Equal(t, "h", pms[2].GetHeaders()[0].GetKey())
	require.Equal(t, "bad\uFFFDkey", pms[2].GetHeaders()[1].GetKey(), "a key another producer wrote as bytes becomes UTF-8")
	require.Equal(t, []byte("\xff"), pms[2].GetHeaders()[1].GetValue(), "values are bytes: untouched")
	require.Equal(t, "t/0", names.of(broker.ShardID{Topic: "t", Index: 0}), "after another shard")
}

// A published message's topic gets a string of its own (the decoded one
// points into the request's frame, which the producer would keep), made
// once per run of one topic.
func TestTopicNames_CopyOncePerRun(t *testing.T) {
	frame := []byte("ordersorders")
	aliased := unsafe.String(&frame[0], 6)
	var names topicNames
	got := names.of(aliased)
	require.Equal(t, "orders", got)
	require.True(t, unsafe.StringData(aliased) != unsafe.StringData(got), "a copy, not the frame")
	again := unsafe.String(&frame[6], 6)
	require.True(t, unsafe.StringData(got) == unsafe.StringData(names.of(again)), "the run's copy is reused")
	require.Equal(t, "other", names.of("other"))
}
