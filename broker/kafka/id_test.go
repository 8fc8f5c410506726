package kafka

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestID_RoundTrips(t *testing.T) {
	for _, p := range []position{
		{topic: "t", partition: 0, offset: 0},
		{topic: "orders.eu-west_1", partition: 7, offset: 123456789},
		{topic: string(make([]byte, 249)), partition: 1<<31 - 1, offset: 1<<63 - 1},
	} {
		got, err := decodeID(encodeID(p))
		require.NoError(t, err)
		require.Equal(t, p, got)
	}
}

func TestID_EncodeAndDecodeWithTheTopicsAllocateOnce(t *testing.T) {
	p := position{topic: "orders", partition: 7, offset: 123456789}
	id := encodeID(p)
	topics := map[string]string{"orders": "orders"}
	require.InDelta(t, 1, testing.AllocsPerRun(100, func() { _ = encodeID(p) }), 0, "the string only")
	require.InDelta(t, 0, testing.AllocsPerRun(100, func() {
		if _, err := decodeIDIn(id, topics); err != nil {
			panic(err)
		}
	}), 0, "a known topic's string is reused")
	got, err := decodeIDIn(id, topics)
	require.NoError(t, err)
	require.Equal(t, p, got)
	got, err = decodeIDIn(id, map[string]string{"other": "other"})
	require.NoError(t, err)
	require.Equal(t, p, got, "an unknown topic is decoded all the same")
}

func TestID_MalformedIsRejected(t *testing.T) {
	long := make([]byte, 1000)
	for i := range long {
		long[i] = 'A'
	}
	for _, id := range []string{string(long), "", "!!!", "AQ", "AgEAZGVtbw" /* version 2 */, "AQEA" /* no topic */, "AQ" + "____________8B"} {
		_, err := decodeID(id)
		require.ErrorIs(t, err, errBadID, "id %q", id)
	}
}

func FuzzDecodeID(f *testing.F) {
	f.Add("AQEAZGVtbw")
	f.Add("")
	f.Add(encodeID(position{topic: "x", partition: 3, offset: 99}))
	f.Fuzz(func(t *testing.T, id string) {
		p, err := decodeID(id)
		if err != nil {
			return
		}
		// Whatever decodes must encode back to an id naming the same place.
		again, err := decodeID(encodeID(p))
		if err != nil || again != p {
			t.Fatalf("%q decoded to %+v, which does not round-trip (%+v, %v)", id, p, again, err)
		}
	})
}
