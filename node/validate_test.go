package node

import (
	"slices"
	"testing"
	"unicode/utf8"

	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

func FuzzValidateOpen(f *testing.F) {
	f.Add("s", "t", "u", int32(0), uint32(0))
	f.Add("", "t", "", int32(1), uint32(5))
	f.Add("s", "", "t", int32(9), uint32(1))
	f.Add("\xff", "t", "t", int32(2), uint32(0))
	f.Fuzz(func(t *testing.T, sub, t1, t2 string, start int32, max uint32) {
		o := &pb.Open{Subscription: sub, Topics: []string{t1, t2}, StartPosition: pb.StartPosition(start), MaxUnacked: max}
		spec, err := validateOpen(o)
		if err != nil {
			if code(err).String() != "InvalidArgument" {
				t.Fatalf("a bad open must be INVALID_ARGUMENT, got %s: %v", code(err), err)
			}
			return
		}
		if spec.Name == "" || !utf8.ValidString(spec.Name) || len(spec.Topics) == 0 || !slices.IsSorted(spec.Topics) {
			t.Fatalf("accepted a bad open: %+v", spec)
		}
		for _, tp := range spec.Topics {
			if tp == "" || !utf8.ValidString(tp) || len(tp) > maxNameBytes {
				t.Fatalf("accepted a bad topic %q", tp)
			}
		}
		if len(slices.Compact(slices.Clone(spec.Topics))) != len(spec.Topics) {
			t.Fatalf("topics not deduplicated: %v", spec.Topics)
		}
	})
}
