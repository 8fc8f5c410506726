package codec

import (
	"math/bits"
	"sync"

	"google.golang.org/grpc/mem"
)

// Tier sizes of the pool: powers of two from 2 KiB to 16 MiB. grpc never
// pools a buffer of 1 KiB or less (mem.NewBuffer turns it into a plain
// slice), and larger requests are rare enough to allocate.
const (
	minTierShift = 11
	maxTierShift = 24
)

var _ mem.BufferPool = (*tieredPool)(nil)

// tieredPool is a mem.BufferPool with one sync.Pool per power-of-two size
// that hands buffers out as they were left. grpc-go's own tiered pools
// (mem.NewTieredBufferPool, mem.DefaultBufferPool) clear a buffer's whole
// capacity on every Get: a 105 KB message took a 1 MiB buffer from the
// default pool and zeroed all of it. Every user of these buffers (grpc's
// frame reader and compaction, this package's Marshal) overwrites the
// length it asked for before reading it, so the clearing buys nothing.
//
// Invariant: a buffer in tiers[i] has capacity exactly 1<<(minTierShift+i).
type tieredPool struct {
	tiers [maxTierShift - minTierShift + 1]sync.Pool
}

// sharedPool is the process's one pool, so that the server, the clients and
// the codecs of one process reuse each other's buffers, as grpc's default
// pool is shared.
var sharedPool = NewBufferPool()

// BufferPool returns the process-wide pool that NewBufferPool describes.
// Give it to grpc (experimental.BufferPool, experimental.WithBufferPool)
// and to New.
func BufferPool() mem.BufferPool { return sharedPool }

// NewBufferPool returns a tiered mem.BufferPool that does not zero the
// buffers it hands out: Get(n) returns n bytes of whatever the buffer held
// before, which the caller must overwrite before reading them.
func NewBufferPool() mem.BufferPool { return &tieredPool{} }

// Get returns a buffer of length size. Its contents are unspecified.
func (p *tieredPool) Get(size int) *[]byte {
	shift := minTierShift
	if size > 1<<minTierShift {
		shift = bits.Len(uint(size - 1)) // the smallest tier >= size
	}
	if shift > maxTierShift {
		b := make([]byte, size)
		return &b
	}
	if b, ok := p.tiers[shift-minTierShift].Get().(*[]byte); ok {
		*b = (*b)[:size]
		return b
	}
	b := make([]byte, size, 1<<shift)
	return &b
}

// Put returns a buffer from Get (or a prefix of one) to its tier; a buffer
// of any other capacity is left to the garbage collector.
func (p *tieredPool) Put(b *[]byte) {
	c := cap(*b)
	if c < 1<<minTierShift || c > 1<<maxTierShift || c&(c-1) != 0 {
		return
	}
	shift := bits.Len(uint(c)) - 1
	p.tiers[shift-minTierShift].Put(b)
}
