package registry

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzRegistryDecode: Decode never panics, a record it accepts applies
// without panicking, and encoding it again decodes to the same record.
func FuzzRegistryDecode(f *testing.F) {
	for _, r := range []Record{
		{Op: OpCreate, Name: "a", Settings: settings("t1", "t2")},
		{Op: OpUpdate, Name: "a", Expect: 3, Settings: &Settings{Topics: []string{"t"}, Start: "earliest", AckDeadline: "1.5s", RetryMin: "1s", RetryMax: "1m"}},
		{Op: OpDelete, Name: "a", Expect: 9},
		{Op: OpRestate, Name: "a", Version: 4, Live: true, Settings: settings("t")},
		{Op: OpSync, Token: "x-1"},
	} {
		f.Add(Encode(&r))
	}
	f.Add([]byte(`{"format":1,"op":"create","name":"a","settings":{"start":"latest","ack_deadline":"-"}}`))
	f.Add([]byte(`{"format":2,"op":"create","name":"a"}`))
	f.Fuzz(func(t *testing.T, value []byte) {
		r, err := Decode(value)
		if err != nil {
			return
		}
		v := NewView(true, nil)
		v.Apply(0, r.Name, value)
		v.Apply(2, r.Name, value) // after a gap too
		again, err := Decode(Encode(&r))
		require.NoError(t, err)
		require.Equal(t, r, again)
	})
}
