package codec_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/internal/codec"
)

func TestBufferPoolSizes(t *testing.T) {
	for _, tc := range []struct {
		size, cap int
	}{
		{0, 2 << 10},
		{1, 2 << 10},
		{1024, 2 << 10},
		{2 << 10, 2 << 10},
		{2<<10 + 1, 4 << 10},
		{16 << 10, 16 << 10},     // a full HTTP/2 DATA frame
		{105_000, 128 << 10},     // a publish request of 100 messages of 1 KiB
		{16 << 20, 16 << 20},     // the largest tier
		{16<<20 + 1, 16<<20 + 1}, // above it: allocated, not pooled
	} {
		t.Run(fmt.Sprint(tc.size), func(t *testing.T) {
			p := codec.NewBufferPool()
			b := p.Get(tc.size)
			require.Len(t, *b, tc.size)
			require.Equal(t, tc.cap, cap(*b))
			p.Put(b)
			b = p.Get(tc.size)
			require.Len(t, *b, tc.size)
		})
	}
}

// A buffer comes back as it was put, not cleared: that is the point.
func TestBufferPoolDoesNotZero(t *testing.T) {
	p := codec.NewBufferPool()
	require.Eventually(t, func() bool {
		// sync.Pool may drop a buffer (a GC, another P): try again.
		b := p.Get(4000)
		(*b)[3999] = 0x5a
		p.Put(b)
		return (*p.Get(4000))[3999] == 0x5a
	}, 5*time.Second, time.Millisecond)
}

// Buffers that did not come from the pool are taken or dropped, never a
// cause of a wrong size later.
func TestBufferPoolForeignBuffers(t *testing.T) {
	p := codec.NewBufferPool()
	for _, c := range []int{0, 1, 1000, 3000, 4096, 32 << 20} {
		b := make([]byte, 0, c)
		require.NotPanics(t, func() { p.Put(&b) })
	}
	short := make([]byte, 10, 8<<10)
	p.Put(&short) // a prefix of a tier-sized buffer keeps its capacity
	for range 100 {
		b := p.Get(8 << 10)
		require.Len(t, *b, 8<<10)
		require.Equal(t, 8<<10, cap(*b))
	}
}
