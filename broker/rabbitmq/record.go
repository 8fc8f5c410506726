package rabbitmq

import (
	"encoding/binary"
	"errors"
	"github.com/streamgate/streamgate/broker/cursor"
)

// The encoding of the positions stream's records (store.go). Pure
// functions: encodeRecord runs on the writer's goroutine, decodeRecord on
// the store reader's dispatch goroutine.

// Record encoding: kind(1) | uvarint-prefixed token, sub, topic, holder |
// uvarint index, n | position: uvarint(next+1) uvarint(created<<1|earliest)
// uvarint(acks) per ack uvarint(delta) | uvarint(counts) per count
// uvarint(delta) uvarint(n). Deltas count from next (from the previous
// entry after the first).
func encodeRecord(r *record) []byte {
	buf := []byte{r.kind}
	str := func(s string) {
		buf = binary.AppendUvarint(buf, uint64(len(s)))
		buf = append(buf, s...)
	}
	str(r.token)
	str(r.key.sub)
	str(r.key.topic)
	str(r.holder)
	buf = binary.AppendUvarint(buf, uint64(r.key.index))
	buf = binary.AppendUvarint(buf, r.n)
	buf = binary.AppendUvarint(buf, uint64(r.pos.next+1))
	head := uint64(r.pos.meta.Origin.CreatedMs) << 1
	if r.pos.meta.Origin.Earliest {
		head |= 1
	}
	buf = binary.AppendUvarint(buf, head)
	prev := max(r.pos.next, 0)
	buf = binary.AppendUvarint(buf, uint64(len(r.pos.meta.Acked)))
	for _, o := range r.pos.meta.Acked {
		buf = binary.AppendUvarint(buf, uint64(o-prev))
		prev = o
	}
	prev = max(r.pos.next, 0)
	buf = binary.AppendUvarint(buf, uint64(len(r.pos.meta.Attempts)))
	for _, a := range r.pos.meta.Attempts {
		buf = binary.AppendUvarint(buf, uint64(a.Pos-prev))
		buf = binary.AppendUvarint(buf, uint64(a.N))
		prev = a.Pos
	}
	return buf
}

var errBadRecord = errors.New("malformed positions record")

// maxRecordEntries bounds what one record may expand to.
const maxRecordEntries = 1 << 20

func decodeRecord(buf []byte) (record, error) {
	var r record
	if len(buf) < 1 {
		return r, errBadRecord
	}
	r.kind, buf = buf[0], buf[1:]
	bad := false
	num := func() uint64 {
		v, n := binary.Uvarint(buf)
		if n <= 0 {
			bad = true
			return 0
		}
		buf = buf[n:]
		return v
	}
	str := func() string {
		l := num()
		if bad || l > uint64(len(buf)) {
			bad = true
			return ""
		}
		s := string(buf[:l])
		buf = buf[l:]
		return s
	}
	r.token, r.key.sub, r.key.topic, r.holder = str(), str(), str(), str()
	idx := num()
	r.n = num()
	r.pos.next = int64(num()) - 1
	head := num()
	r.pos.meta.Origin = cursor.Origin{CreatedMs: int64(head >> 1), Earliest: head&1 == 1}
	if bad || idx > 1<<31-1 || r.kind < recStart || r.kind > recSync {
		return r, errBadRecord
	}
	r.key.index = int32(idx)
	prev := max(r.pos.next, 0)
	na := num()
	if na > maxRecordEntries {
		return r, errBadRecord
	}
	for range na {
		prev += int64(num())
		r.pos.meta.Acked = append(r.pos.meta.Acked, prev)
	}
	prev = max(r.pos.next, 0)
	nc := num()
	if bad || nc > maxRecordEntries {
		return r, errBadRecord
	}
	for range nc {
		prev += int64(num())
		n := num()
		r.pos.meta.Attempts = append(r.pos.meta.Attempts, cursor.Attempts{Pos: prev, N: uint16(min(n, 1<<16-1))})
	}
	if bad {
		return r, errBadRecord
	}
	return r, nil
}
