package registry

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/broker"
)

func settings(topics ...string) *Settings {
	return SettingsOf(broker.SubscriptionConfig{Topics: topics, AckDeadline: 30 * time.Second})
}

// TestRegistryApplyRules checks the compare-and-set rules record by
// record: which records take effect and which versions they give.
func TestRegistryApplyRules(t *testing.T) {
	v := NewView(false, nil)
	steps := []struct {
		rec      Record
		valid    bool
		live     bool
		version  int64 // when live
		topicsIs string
	}{
		{Record{Op: OpCreate, Name: "a", Settings: settings("t1")}, true, true, 1, "t1"},
		{Record{Op: OpCreate, Name: "a", Settings: settings("t2")}, false, true, 1, "t1"},
		{Record{Op: OpUpdate, Name: "a", Expect: 1, Settings: settings("t3")}, true, true, 3, "t3"},
		{Record{Op: OpUpdate, Name: "a", Expect: 1, Settings: settings("t4")}, false, true, 3, "t3"},
		{Record{Op: OpRestate, Name: "a", Version: 3, Live: true, Settings: settings("t3")}, true, true, 3, "t3"},
		{Record{Op: OpRestate, Name: "a", Version: 1, Live: true, Settings: settings("t1")}, false, true, 3, "t3"},
		{Record{Op: OpDelete, Name: "a", Expect: 2}, false, true, 3, "t3"},
		{Record{Op: OpDelete, Name: "a", Expect: 3}, true, false, 0, ""},
		{Record{Op: OpUpdate, Name: "a", Expect: 3, Settings: settings("t5")}, false, false, 0, ""},
		{Record{Op: OpDelete, Name: "a", Expect: 3}, false, false, 0, ""},
		{Record{Op: OpCreate, Name: "a", Settings: settings("t6")}, true, true, 11, "t6"},
		{Record{Op: OpUpdate, Name: "b", Expect: 11, Settings: settings("t7")}, false, false, 0, ""},
	}
	for pos, st := range steps {
		tok, wait, err := v.register()
		require.NoError(t, err)
		st.rec.Token = tok
		v.Apply(int64(pos), st.rec.Name, Encode(&st.rec))
		o := <-wait
		assert.Equal(t, st.valid, o.Valid, "step %d (%s): valid", pos, st.rec.Op)
		assert.Equal(t, st.live, o.Live, "step %d (%s): live", pos, st.rec.Op)
		if st.live {
			assert.Equal(t, st.version, o.Config.Version, "step %d (%s): version", pos, st.rec.Op)
			assert.Equal(t, []string{st.topicsIs}, o.Config.Topics, "step %d (%s): topics", pos, st.rec.Op)
		}
	}
	require.Len(t, v.list(), 1)
}

// TestRegistryApplyIgnoresRepeatsAndBadRecords: a record delivered twice
// (a reader that reconnected) applies once; an unreadable one, or one
// under another name's key, changes nothing.
func TestRegistryApplyIgnoresRepeatsAndBadRecords(t *testing.T) {
	v := NewView(true, nil)
	create := Encode(&Record{Op: OpCreate, Name: "a", Settings: settings("t")})
	v.Apply(0, "a", create)
	v.Apply(0, "a", create)
	v.Apply(1, "a", []byte("{not json"))
	v.Apply(2, "a", []byte(`{"format":99,"op":"create","name":"a"}`))
	v.Apply(3, "b", Encode(&Record{Op: OpCreate, Name: "c", Settings: settings("t")}))
	v.Apply(4, "d", Encode(&Record{Op: OpCreate, Name: "d", Settings: &Settings{Start: "sideways"}}))
	got := v.list()
	require.Len(t, got, 1)
	assert.Equal(t, "a", got[0].Name)
	assert.Equal(t, int64(1), got[0].Version)
	e, _ := v.get("a")
	assert.False(t, e.accurate, "the unreadable records are the last of key a")
	assert.Equal(t, int64(5), v.Next())
}

// TestRegistryRoundTripsEverySetting: what the store is given comes back.
func TestRegistryRoundTripsEverySetting(t *testing.T) {
	cfg := broker.SubscriptionConfig{
		Name: "s", Topics: []string{"a", "b"}, Start: broker.StartEarliest,
		AckDeadline: 1500 * time.Millisecond, MaxUnacked: 7, MaxDeliveryAttempts: 5,
		DeadLetterTopic: "dlq", RetryMin: time.Second, RetryMax: time.Minute,
	}
	created := time.Date(2026, 11, 30, 12, 0, 0, 123456789, time.UTC)
	v := NewView(false, nil)
	v.Apply(0, "s", Encode(&Record{Op: OpCreate, Name: "s", Settings: SettingsOf(cfg), Created: created, Updated: created}))
	got := v.list()
	require.Len(t, got, 1)
	want := cfg
	want.Version, want.Created, want.Updated = 1, created, created
	assert.Equal(t, want, got[0])
}

// TestRegistryGapReaderTakesRestates: a reader that meets a name after a
// gap takes that record as given (its history was compacted away), and a
// later restate replaces it: here the first record it sees was in fact
// rejected, and the restate after it tells the real state.
func TestRegistryGapReaderTakesRestates(t *testing.T) {
	v := NewView(true, nil)
	v.Apply(5, "a", Encode(&Record{Op: OpUpdate, Name: "a", Expect: 2, Settings: settings("rejected")}))
	got := v.list()
	require.Len(t, got, 1)
	assert.Equal(t, []string{"rejected"}, got[0].Topics)
	v.Apply(6, "a", Encode(&Record{Op: OpRestate, Name: "a", Version: 4, Live: true, Settings: settings("real")}))
	got = v.list()
	require.Len(t, got, 1)
	assert.Equal(t, []string{"real"}, got[0].Topics)
	assert.Equal(t, int64(4), got[0].Version)
	// A compare-and-set on the restated version holds, as for every
	// reader that read the whole log.
	v.Apply(7, "a", Encode(&Record{Op: OpUpdate, Name: "a", Expect: 4, Settings: settings("next")}))
	assert.Equal(t, int64(8), v.list()[0].Version)
}

// TestRegistryGapReaderStaysAssumed: a stale restate that is the last
// record of its name in the compacted part makes a reader that starts
// there assume a wrong state, and a stale update that every full reader
// rejects passes its check against that state; the tombstone its writer
// then appends must still correct it.
func TestRegistryGapReaderStaysAssumed(t *testing.T) {
	recs := []memRec{
		{"a", Encode(&Record{Op: OpCreate, Name: "a", Settings: settings("v1")})},
		{"a", Encode(&Record{Op: OpUpdate, Name: "a", Expect: 1, Settings: settings("v2")})},
		{"a", Encode(&Record{Op: OpRestate, Name: "a", Version: 1, Live: true, Settings: settings("v1")})}, // stale
		{"a", Encode(&Record{Op: OpDelete, Name: "a", Expect: 2})},
		{"a", Encode(&Record{Op: OpUpdate, Name: "a", Expect: 1, Settings: settings("stale")})},
		{"a", nil}, // the tombstone after the delete (and after the rejected update)
		{"b", Encode(&Record{Op: OpCreate, Name: "b", Settings: settings("b")})},
	}
	full := replay(compacted(recs, 0, false), len(recs)).list()
	require.Len(t, full, 1)
	for upTo := range len(recs) + 1 {
		got := replay(compacted(recs, upTo, false), len(recs)).list()
		require.Equal(t, full, got, "compacted below %d", upTo)
	}
}

// TestRegistryTombstones: a tombstone makes a compacting view forget a
// deleted name, and is rejected over a live one (created again between the
// delete and its tombstone).
func TestRegistryTombstones(t *testing.T) {
	v := NewView(true, nil)
	v.Apply(0, "a", Encode(&Record{Op: OpCreate, Name: "a", Settings: settings("t")}))
	v.Apply(1, "a", Encode(&Record{Op: OpDelete, Name: "a", Expect: 1}))
	_, ok := v.get("a")
	assert.True(t, ok, "a deleted name is kept until its tombstone")
	v.Apply(2, "a", nil)
	_, ok = v.get("a")
	assert.False(t, ok)
	v.Apply(3, "a", Encode(&Record{Op: OpCreate, Name: "a", Settings: settings("t")}))
	v.Apply(4, "a", nil)
	e, ok := v.get("a")
	require.True(t, ok)
	assert.True(t, e.live)
	assert.False(t, e.accurate, "a tombstone over a live name must be followed by a restate")
}
