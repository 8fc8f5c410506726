package ring

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}

// fatalf is what checkFair needs from *testing.T and *rapid.T.
type fatalf interface {
	Helper()
	Fatalf(format string, args ...any)
}

// checkFair fails unless every shard is assigned exactly once, to one of
// subs, and the loads of subs differ by at most one.
func checkFair(t fatalf, subs, shards []string, a Assignment) {
	t.Helper()
	subs, shards = normalize(subs), normalize(shards)
	if len(subs) == 0 {
		if len(a) != 0 {
			t.Fatalf("no subscribers but %d shards assigned", len(a))
		}
		return
	}
	if len(a) != len(shards) {
		t.Fatalf("%d shards assigned, want %d", len(a), len(shards))
	}
	load := make(map[string]int, len(subs))
	for _, s := range subs {
		load[s] = 0
	}
	for _, shard := range shards {
		sub, ok := a[shard]
		if !ok {
			t.Fatalf("shard %q not assigned", shard)
		}
		if _, ok := load[sub]; !ok {
			t.Fatalf("shard %q assigned to %q, not a subscriber", shard, sub)
		}
		load[sub]++
	}
	lo, hi := len(shards), 0
	for _, n := range load {
		lo, hi = min(lo, n), max(hi, n)
	}
	if want := len(shards) / len(subs); lo != want || hi-lo > 1 {
		t.Fatalf("loads from %d to %d, want %d or %d", lo, hi, want, want+1)
	}
}

// scrambled returns ids shuffled, with some repeated, so that only the set
// is left in common with the input.
func scrambled(rng *rand.Rand, ids []string) []string {
	out := slices.Clone(ids)
	for i := range out {
		if rng.IntN(4) == 0 {
			out = append(out, ids[i])
		}
	}
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

func TestAssignFairAndOrderFree(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		subs := rapid.SliceOfNDistinct(rapid.StringMatching(`[a-z0-9-]{1,12}`), 1, 64, rapid.ID[string]).Draw(t, "subscribers")
		shards := rapid.SliceOfNDistinct(rapid.StringMatching(`[a-z0-9/-]{1,16}`), 1, 256, rapid.ID[string]).Draw(t, "shards")
		a := Assign(subs, shards)
		checkFair(t, subs, shards, a)

		rng := rand.New(rand.NewPCG(rapid.Uint64().Draw(t, "seed"), 0))
		if b := Assign(scrambled(rng, subs), scrambled(rng, shards)); !maps.Equal(a, b) {
			t.Fatalf("shuffling the inputs changed the assignment: %d shards differ", Moved(a, b))
		}
	})
}

// TestAssignExtremes covers the corners rapid seldom reaches: the largest
// sizes, a single subscriber or shard, and shard counts just around a
// multiple of the subscriber count.
func TestAssignExtremes(t *testing.T) {
	for _, tc := range []struct{ subs, shards int }{
		{64, 256}, {64, 255}, {64, 257}, {64, 1}, {64, 63}, {64, 64}, {64, 65},
		{1, 256}, {1, 1}, {63, 256}, {2, 3}, {32, 8},
	} {
		t.Run(fmt.Sprintf("%dx%d", tc.subs, tc.shards), func(t *testing.T) {
			subs, shards := names("sub-", tc.subs), names("orders/", tc.shards)
			a := Assign(subs, shards)
			checkFair(t, subs, shards, a)
			rng := rand.New(rand.NewPCG(uint64(tc.subs), uint64(tc.shards)))
			if b := Assign(scrambled(rng, subs), scrambled(rng, shards)); !maps.Equal(a, b) {
				t.Fatalf("shuffling the inputs changed the assignment: %d shards differ", Moved(a, b))
			}
		})
	}
}

func TestAssignEmpty(t *testing.T) {
	for _, tc := range []struct {
		name         string
		subs, shards []string
	}{
		{"nothing", nil, nil},
		{"no subscribers", nil, []string{"a"}},
		{"only empty subscriber ids", []string{"", ""}, []string{"a"}},
		{"no shards", []string{"s"}, nil},
		{"only empty shard names", []string{"s"}, []string{""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := Assign(tc.subs, tc.shards)
			if a == nil || len(a) != 0 {
				t.Fatalf("Assign = %#v, want an empty, non-nil assignment", a)
			}
		})
	}
}

// TestAssignShardAtAPoint uses shard names that hash exactly onto
// subscribers' points ("<subscriber>-<j>" is how points are named), the one
// place where a distance of zero could appear.
func TestAssignShardAtAPoint(t *testing.T) {
	subs := []string{"a", "b", "c"}
	shards := []string{"a-0", "a-1", "b-7", "c-99", "orders/1"}
	a := Assign(subs, shards)
	checkFair(t, subs, shards, a)
	// hashring's walk starts after the point, so "a-0" does not go to a
	// because of its own point.
	r := NewRing(subs)
	for _, shard := range shards {
		want, _ := hashringOf(subs).GetNode(shard)
		if got := r.walkOrder(shard)[0]; got != want {
			t.Errorf("walk from %s starts at %s, hashring's GetNode gives %s", shard, got, want)
		}
	}
}

// TestAssignNoBlockingPair checks the invariant Assign keeps: no shard is
// farther from its subscriber than from another subscriber that holds a
// shard farther from it still (both would rather trade).
func TestAssignNoBlockingPair(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		subs := names("sub-", rapid.IntRange(1, 16).Draw(t, "subscribers"))
		shards := names("orders/", rapid.IntRange(1, 64).Draw(t, "shards"))
		r := NewRing(subs)
		a := r.Assign(shards)
		index := make(map[string]int)
		for i, s := range r.subscribers {
			index[s] = i
		}
		// dist[shard][sub]: arc to the subscriber's nearest point.
		dist := make(map[string][]key)
		for _, shard := range shards {
			k := hashKey([]byte(shard))
			w := walk{from: k, start: r.successor(k)}
			d := make([]key, len(subs))
			seen := make([]bool, len(subs))
			for step := range r.points {
				if sub := r.points[(w.start+step)%len(r.points)].sub; !seen[sub] {
					seen[sub], d[sub] = true, r.distance(w, step)
				}
			}
			dist[shard] = d
		}
		farthest := make([]key, len(subs)) // per subscriber, its farthest shard
		for shard, sub := range a {
			if d := dist[shard][index[sub]]; d.compare(farthest[index[sub]]) > 0 {
				farthest[index[sub]] = d
			}
		}
		for shard, sub := range a {
			mine := dist[shard][index[sub]]
			for other := range subs {
				d := dist[shard][other]
				if d.compare(mine) < 0 && d.compare(farthest[other]) < 0 {
					t.Fatalf("%s is at %s but %s is nearer and holds a farther shard", shard, sub, r.subscribers[other])
				}
			}
		}
	})
}

// TestAssignGolden pins the algorithm and the hash: the same sets must give
// these assignments on every node, build and version. If they change, nodes
// running different versions disagree about ownership during a rolling
// upgrade, so change them only on purpose and say so in the release notes.
// The second case is the first plus a join: node-d takes orders/2 and
// orders/5, and node-b, which gave up two, takes orders/4 back from node-c.
func TestAssignGolden(t *testing.T) {
	for _, tc := range []struct {
		subs []string
		want Assignment
	}{{
		subs: []string{"node-a", "node-b", "node-c"},
		want: Assignment{
			"orders/0": "node-a", "orders/1": "node-c", "orders/2": "node-b",
			"orders/3": "node-c", "orders/4": "node-c", "orders/5": "node-b",
			"orders/6": "node-a", "orders/7": "node-b", "orders/8": "node-a",
			"orders/9": "node-c",
		},
	}, {
		subs: []string{"node-a", "node-b", "node-c", "node-d"},
		want: Assignment{
			"orders/0": "node-a", "orders/1": "node-c", "orders/2": "node-d",
			"orders/3": "node-c", "orders/4": "node-b", "orders/5": "node-d",
			"orders/6": "node-a", "orders/7": "node-b", "orders/8": "node-a",
			"orders/9": "node-c",
		},
	}} {
		shards := names("orders/", 10)
		if got := Assign(tc.subs, shards); !maps.Equal(got, tc.want) {
			for _, shard := range shards {
				t.Logf("%q: %q (golden %q)", shard, got[shard], tc.want[shard])
			}
			t.Errorf("Assign(%v) changed", tc.subs)
		}
	}
}

func TestOf(t *testing.T) {
	a := Assignment{"s3": "x", "s1": "x", "s2": "y"}
	if got := a.Of("x"); !slices.Equal(got, []string{"s1", "s3"}) {
		t.Fatalf("Of(x) = %v", got)
	}
	if got := a.Of("z"); len(got) != 0 {
		t.Fatalf("Of(z) = %v", got)
	}
}

func TestMoved(t *testing.T) {
	before := Assignment{"s1": "x", "s2": "x", "s3": "y", "gone": "y"}
	after := Assignment{"s1": "x", "s2": "z", "s3": "x", "new": "z"}
	if got := Moved(before, after); got != 2 {
		t.Fatalf("Moved = %d, want 2", got)
	}
}
