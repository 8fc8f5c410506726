package ring

import (
	"fmt"
	"slices"
	"testing"

	"github.com/serialx/hashring"
)

// hashringOf builds the library's ring for subs with this package's weight:
// the ring Ring claims to reproduce.
func hashringOf(subs []string) *hashring.HashRing {
	w := make(map[string]int, len(subs))
	for _, s := range subs {
		w[s] = weight
	}
	return hashring.NewWithWeights(w)
}

// walkOrder lists the subscribers in the order a shard's clockwise walk
// first meets them.
func (r *Ring) walkOrder(shard string) []string {
	k := hashKey([]byte(shard))
	start := r.successor(k)
	seen := make([]bool, len(r.subscribers))
	var out []string
	for step := 0; step < len(r.points) && len(out) < len(r.subscribers); step++ {
		sub := r.points[(start+step)%len(r.points)].sub
		if !seen[sub] {
			seen[sub] = true
			out = append(out, r.subscribers[sub])
		}
	}
	return out
}

func TestHashMatchesHashring(t *testing.T) {
	lib := hashringOf([]string{"x"})
	for _, s := range []string{"", "a", "orders/0", "sub-1-99", "ünïcode", "a-0"} {
		got := hashKey([]byte(s))
		want := lib.GenKey(s).(*hashring.Int64PairHashKey)
		if got.hi != uint64(want.High)^1<<63 || got.lo != uint64(want.Low)^1<<63 {
			t.Errorf("hashKey(%q) = %x, hashring has %x", s, got, want)
		}
	}
}

// TestWalkMatchesHashring pins Ring to serialx/hashring: for every shard the
// clockwise order of subscribers is GetNodes' order, so the first one is
// plain consistent hashing's GetNode. Ids with dashes and digits check that
// point names cannot be confused between subscribers.
func TestWalkMatchesHashring(t *testing.T) {
	subs := []string{"alpha", "bravo", "charlie", "node-1", "node-10", "node-1-0", "x"}
	lib := hashringOf(subs)
	r := NewRing(subs)
	for i := range 300 {
		shard := fmt.Sprintf("orders/%d", i)
		want, ok := lib.GetNodes(shard, len(subs))
		if !ok {
			t.Fatalf("GetNodes(%q) failed", shard)
		}
		if got := r.walkOrder(shard); !slices.Equal(got, want) {
			t.Fatalf("walk from %q = %v, hashring gives %v", shard, got, want)
		}
	}
}

func TestNewRingNormalizes(t *testing.T) {
	r := NewRing([]string{"b", "", "a", "b"})
	if got := r.Subscribers(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("Subscribers() = %v, want [a b]", got)
	}
	if len(r.points) != 2*weight {
		t.Fatalf("%d points, want %d", len(r.points), 2*weight)
	}
}

func TestSortPoints(t *testing.T) {
	p := []point{
		{key{5, 1}, 0}, {key{1, 9}, 2}, {key{5, 0}, 1}, {key{1 << 63, 0}, 0},
		{key{5, 1}, 1}, {key{5, 1}, 0}, {key{0, 0}, 3}, {key{1<<63 + 1, 7}, 1},
		{key{^uint64(0), 2}, 0}, {key{0xff << 56, 0}, 2}, {key{^uint64(0), 1}, 1},
	}
	want := slices.Clone(p)
	slices.SortFunc(want, func(a, b point) int {
		if pointLess(a, b) {
			return -1
		}
		if pointLess(b, a) {
			return 1
		}
		return 0
	})
	sortPoints(p)
	if !slices.Equal(p, want) {
		t.Fatalf("sortPoints = %v, want %v", p, want)
	}
}
