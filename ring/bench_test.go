package ring

import (
	"fmt"
	"testing"
)

// BenchmarkAssign measures a whole assignment from scratch, ring included,
// as a node computed it after every membership change before Rebuild;
// 1000x8 is one subscription with 1,000 streams (issue 10).
func BenchmarkAssign(b *testing.B) {
	for _, size := range []struct{ subs, shards int }{{8, 64}, {64, 256}, {1000, 8}} {
		subs, shards := names("sub-", size.subs), names("orders/", size.shards)
		b.Run(fmt.Sprintf("%dx%d", size.subs, size.shards), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Assign(subs, shards)
			}
		})
	}
}

// BenchmarkNewRing and BenchmarkRingAssign split BenchmarkAssign/64x256:
// building the ring (6400 MD5 sums and a sort) is most of the cost, so a
// caller that reassigns shards often should keep the Ring.
func BenchmarkNewRing(b *testing.B) {
	subs := names("sub-", 64)
	b.ReportAllocs()
	for b.Loop() {
		NewRing(subs)
	}
}

func BenchmarkRingAssign(b *testing.B) {
	r, shards := NewRing(names("sub-", 64)), names("orders/", 256)
	b.ReportAllocs()
	for b.Loop() {
		r.Assign(shards)
	}
}

// BenchmarkHashringNewWithWeights is the library's own ring for the same 64
// subscribers, for comparison with BenchmarkNewRing.
func BenchmarkHashringNewWithWeights(b *testing.B) {
	subs := names("sub-", 64)
	b.ReportAllocs()
	for b.Loop() {
		hashringOf(subs)
	}
}
