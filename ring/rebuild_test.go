package ring

import (
	"fmt"
	"maps"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// sameRing fails unless got is want point for point: Rebuild must give
// exactly NewRing's ring, or nodes that built theirs differently would
// disagree about owners.
func sameRing(t fatalf, got, want *Ring) {
	t.Helper()
	if !slices.Equal(got.subscribers, want.subscribers) {
		t.Fatalf("subscribers %v, want %v", got.subscribers, want.subscribers)
	}
	if len(got.points) != len(want.points) {
		t.Fatalf("%d points, want %d", len(got.points), len(want.points))
	}
	for i := range got.points {
		if got.points[i] != want.points[i] {
			t.Fatalf("point %d is %v, want %v", i, got.points[i], want.points[i])
		}
	}
}

func TestRebuildIsNewRing(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		id := rapid.StringMatching(`[a-z0-9-]{0,8}`)
		before := rapid.SliceOfN(id, 0, 40).Draw(t, "before")
		after := rapid.SliceOfN(id, 0, 40).Draw(t, "after")
		// Keep some of before, so that joins and leaves mix.
		for _, s := range before {
			if rapid.Bool().Draw(t, "keep "+s) {
				after = append(after, s)
			}
		}
		old := NewRing(before)
		got := old.Rebuild(after)
		sameRing(t, got, NewRing(after))
		sameRing(t, old, NewRing(before)) // r is not changed
		shards := names("orders/", rapid.IntRange(0, 64).Draw(t, "shards"))
		if a, b := got.Assign(shards), Assign(after, shards); !maps.Equal(a, b) {
			t.Fatalf("assignments differ on %d shards", Moved(a, b))
		}
	})
}

func TestRebuildCorners(t *testing.T) {
	for _, tc := range []struct {
		name          string
		before, after []string
	}{
		{"from nothing", nil, []string{"a", "b"}},
		{"to nothing", []string{"a", "b"}, nil},
		{"only empty ids", []string{"a"}, []string{"", ""}},
		{"all new", []string{"a", "b"}, []string{"c", "d"}},
		{"join first and last", names("sub-", 10), append(names("sub-", 10), "a", "z")},
		{"leave first and last", names("sub-", 10), names("sub-", 10)[1:9]},
		{"prefix ids", []string{"node-1"}, []string{"node-1", "node-1-0", "node-10"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sameRing(t, NewRing(tc.before).Rebuild(tc.after), NewRing(tc.after))
		})
	}
	var none *Ring
	sameRing(t, none.Rebuild([]string{"b", "a"}), NewRing([]string{"a", "b"}))
	r := NewRing([]string{"a", "b"})
	if r.Rebuild([]string{"b", "a", "b", ""}) != r {
		t.Fatal("Rebuild to the same set made a new ring")
	}
}

// TestRebuildOneByOne grows a ring to 300 subscribers one join at a time
// and shrinks it again, as a burst of streams does, comparing with a fresh
// ring now and then.
func TestRebuildOneByOne(t *testing.T) {
	all := names("sub-", 300)
	var r *Ring
	for i := range all {
		r = r.Rebuild(all[:i+1])
		if i%37 == 0 {
			sameRing(t, r, NewRing(all[:i+1]))
		}
	}
	for i := range all {
		r = r.Rebuild(all[i+1:])
		if i%41 == 0 {
			sameRing(t, r, NewRing(all[i+1:]))
		}
	}
	if len(r.points) != 0 {
		t.Fatalf("%d points left", len(r.points))
	}
}

// BenchmarkRebuild is one join and one leave in a ring of n subscribers,
// against BenchmarkAssign/1000x8's fresh ring.
func BenchmarkRebuild(b *testing.B) {
	for _, n := range []int{64, 1000, 10000} {
		subs := names("sub-", n)
		r := NewRing(subs[1:])
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r.Rebuild(subs).Rebuild(subs[1:])
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(2*b.N), "ns/change")
		})
	}
}
