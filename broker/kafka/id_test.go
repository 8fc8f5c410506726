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

func TestID_MalformedIsRejected(t *testing.T) {
	for _, id := range []string{"", "!!!", "AQ", "AgEAZGVtbw" /* version 2 */, "AQEA" /* no topic */, "AQ" + "____________8B"} {
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
