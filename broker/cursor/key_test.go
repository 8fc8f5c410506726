package cursor

import "testing"

// The shards Kafka's Java client picks for these keys among 8 partitions
// (streamgate's Kafka tests and README see user-1 on shard 4).
func TestKeyShard_IsKafkasRule(t *testing.T) {
	if got := KeyShard([]byte("user-1"), 8); got != 4 {
		t.Fatalf("user-1 of 8: got shard %d, want 4", got)
	}
	for _, n := range []int{1, 3, 8, 100} {
		for _, k := range []string{"", "a", "ab", "abc", "abcd", "abcde", "user-1"} {
			if s := KeyShard([]byte(k), n); s < 0 || s >= n {
				t.Fatalf("%q of %d: shard %d out of range", k, n, s)
			}
		}
	}
}
