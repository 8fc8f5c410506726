package node

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The open rate refills at its rate, up to the burst, and says how long
// to wait; released streams free their count.
func TestLimit_OpenRateBucketRefillsAndSaysWhenToRetry(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxOpensPerSecond = 2
	cfg.MaxStreamsPerIdentity = 10
	l := newStreamLimiter(cfg)
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	for range 2 {
		require.NoError(t, l.admit("a", true), "a burst of 2")
	}
	err := l.admit("a", true)
	require.Equal(t, codes.ResourceExhausted, status.Code(err))
	assert.Contains(t, err.Error(), "retry after 500ms")
	require.NoError(t, l.admit("b", true), "another caller has a bucket of its own")
	require.NoError(t, l.admit("a", false), "publish streams are not rate limited")
	now = now.Add(250 * time.Millisecond)
	err = l.admit("a", true)
	assert.Contains(t, err.Error(), "retry after 250ms")
	now = now.Add(250 * time.Millisecond)
	require.NoError(t, l.admit("a", true))
	assert.Equal(t, 4, l.open["a"])
	for range 4 {
		l.release("a")
	}
	_, ok := l.open["a"]
	assert.False(t, ok, "a caller with no stream open is forgotten")
}

// Buckets of callers gone quiet are swept: the map stays bounded by the
// callers active within the refill time.
func TestLimit_OpenRateBucketsOfQuietCallersAreSwept(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxOpensPerSecond = 1
	l := newStreamLimiter(cfg)
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	for i := range 5000 {
		require.NoError(t, l.admit(fmt.Sprint("caller-", i), true))
		l.release(fmt.Sprint("caller-", i))
		now = now.Add(time.Millisecond) // 1 s refills a bucket: ~1000 active at once
	}
	assert.LessOrEqual(t, len(l.buckets), 2*1024+1, "quiet callers' buckets are dropped")
	assert.Empty(t, l.open)
}
