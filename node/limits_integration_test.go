package node_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"google.golang.org/grpc/codes"

	"github.com/streamgate/streamgate/client"
	"github.com/streamgate/streamgate/internal/testenv"
	"github.com/streamgate/streamgate/node"
)

// A message with too many headers or too long a key fails alone with
// INVALID_ARGUMENT naming the limit's flag; messages at the limit and the
// rest of the stream are published.
func TestLimit_HeaderCountAndKeySizeFailAloneWithInvalidArgument(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Node: func(c *node.Config) {
		c.MaxHeaders = 3
		c.MaxKeyBytes = 8
	}})
	headers := func(n int) []client.Header {
		hs := make([]client.Header, n)
		for i := range hs {
			hs[i] = client.Header{Key: fmt.Sprint("h", i), Value: []byte("v")}
		}
		return hs
	}
	results := publish(t, env.Client, []client.Message{
		{RequestID: "ok-headers", Topic: "t", Payload: []byte("a"), Headers: headers(3)},
		{RequestID: "many-headers", Topic: "t", Payload: []byte("b"), Headers: headers(4)},
		{RequestID: "ok-key", Topic: "t", Key: []byte("12345678"), Payload: []byte("c")},
		{RequestID: "long-key", Topic: "t", Key: []byte("123456789"), Payload: []byte("d")},
		{RequestID: "ok-last", Topic: "t", Payload: []byte("e")},
	}, 10)
	for _, id := range []string{"ok-headers", "ok-key", "ok-last"} {
		assert.Equal(t, codes.OK, results[id].Code, "%s: %s", id, results[id].Error)
	}
	assert.Equal(t, codes.InvalidArgument, results["many-headers"].Code)
	assert.Contains(t, results["many-headers"].Error, "4 headers, over the limit of 3 (--max-headers)")
	assert.Equal(t, codes.InvalidArgument, results["long-key"].Code)
	assert.Contains(t, results["long-key"].Error, "key is 9 bytes, over the limit of 8 (--max-key-bytes)")
	recs := testenv.ReadAll(t, env.Consumer(t, "t"), 3, 10*time.Second)
	assert.Len(t, recs, 3)
}
