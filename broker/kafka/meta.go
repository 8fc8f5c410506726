package kafka

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strings"

	"github.com/streamgate/streamgate/broker/cursor"
)

// Commit metadata (a cursor.Saved beside the committed offset), version 2:
// "sg2:" and base64 of
//
//	uvarint(creation time in ms << 1 | 1 if earliest),
//	uvarint(number of ack runs), then per run (gap, length) uvarints,
//	then until the end (gap, length, count) uvarint triples:
//
// runs of acked offsets above the committed one, then runs of records with
// the same delivery count; each gap counts from the end of the previous
// run of its kind (the first from the committed offset). Version 1 ("sg1:")
// held only the ack runs, and is still read.
//
// Kafka caps metadata at 4096 bytes by default (offset.metadata.max.bytes).
// Ack runs go first; runs that do not fit are left out, from the top, and
// cost redelivery, never loss. Delivery counts that do not fit after them
// are left out too: those records count again from their next delivery.
const (
	metaPrefixV1 = "sg1:"
	metaPrefix   = "sg2:"
	maxMetaBytes = 4000
	// maxMetaRecords bounds what a metadata string may expand to (each
	// kind): more than any reader holds, far less than a hostile string
	// could claim.
	maxMetaRecords = 1 << 20
)

var errBadMeta = errors.New("malformed commit metadata")

func encodeMeta(committed int64, m cursor.Saved) string {
	if len(m.Acked) == 0 && len(m.Attempts) == 0 && m.Origin == (cursor.Origin{}) {
		return ""
	}
	head := uint64(m.Origin.CreatedMs) << 1
	if m.Origin.Earliest {
		head |= 1
	}
	budget := base64.RawStdEncoding.DecodedLen(maxMetaBytes-len(metaPrefix)) - 2*binary.MaxVarintLen64
	var acks []byte
	runs := 0
	prev := committed
	for i := 0; i < len(m.Acked); {
		j := i + 1
		for j < len(m.Acked) && m.Acked[j] == m.Acked[j-1]+1 {
			j++
		}
		n := len(acks)
		acks = binary.AppendUvarint(acks, uint64(m.Acked[i]-prev))
		acks = binary.AppendUvarint(acks, uint64(j-i))
		if len(acks) > budget {
			acks = acks[:n]
			break
		}
		runs++
		prev = m.Acked[j-1] + 1
		i = j
	}
	buf := binary.AppendUvarint(nil, head)
	buf = binary.AppendUvarint(buf, uint64(runs))
	buf = append(buf, acks...)
	prev = committed
	for i := 0; i < len(m.Attempts); {
		j := i + 1
		for j < len(m.Attempts) && m.Attempts[j].Pos == m.Attempts[j-1].Pos+1 && m.Attempts[j].N == m.Attempts[i].N {
			j++
		}
		n := len(buf)
		buf = binary.AppendUvarint(buf, uint64(m.Attempts[i].Pos-prev))
		buf = binary.AppendUvarint(buf, uint64(j-i))
		buf = binary.AppendUvarint(buf, uint64(m.Attempts[i].N))
		if len(buf) > budget+2*binary.MaxVarintLen64 {
			buf = buf[:n]
			break
		}
		prev = m.Attempts[j-1].Pos + 1
		i = j
	}
	return metaPrefix + base64.RawStdEncoding.EncodeToString(buf)
}

func decodeMeta(committed int64, meta string) (cursor.Saved, error) {
	var m cursor.Saved
	if meta == "" {
		return m, nil
	}
	v1 := false
	rest, ok := strings.CutPrefix(meta, metaPrefix)
	if !ok {
		if rest, ok = strings.CutPrefix(meta, metaPrefixV1); !ok {
			return m, errBadMeta
		}
		v1 = true
	}
	buf, err := base64.RawStdEncoding.DecodeString(rest)
	if err != nil {
		return m, errBadMeta
	}
	next := func() (uint64, bool) {
		v, n := binary.Uvarint(buf)
		if n <= 0 {
			return 0, false
		}
		buf = buf[n:]
		return v, true
	}
	runs := uint64(1 << 62)
	if !v1 {
		head, ok1 := next()
		runs, ok = next()
		if !ok1 || !ok || head>>1 > 1<<50 {
			return m, errBadMeta
		}
		m.Origin = cursor.Origin{CreatedMs: int64(head >> 1), Earliest: head&1 == 1}
	}
	prev := committed
	for ; runs > 0 && len(buf) > 0; runs-- {
		gap, ok1 := next()
		run, ok2 := next()
		if !ok1 || !ok2 || run == 0 || run > 1<<20 || gap > 1<<40 {
			return cursor.Saved{}, errBadMeta
		}
		if len(m.Acked)+int(run) > maxMetaRecords {
			return cursor.Saved{}, errBadMeta
		}
		start := prev + int64(gap)
		for k := range int64(run) {
			m.Acked = append(m.Acked, start+k)
		}
		prev = start + int64(run)
	}
	if !v1 && runs > 0 {
		return cursor.Saved{}, errBadMeta
	}
	prev = committed
	for len(buf) > 0 {
		gap, ok1 := next()
		run, ok2 := next()
		count, ok3 := next()
		if !ok1 || !ok2 || !ok3 || run == 0 || run > 1<<20 || gap > 1<<40 || count == 0 || count > 1<<16-1 {
			return cursor.Saved{}, errBadMeta
		}
		if len(m.Attempts)+int(run) > maxMetaRecords {
			return cursor.Saved{}, errBadMeta
		}
		start := prev + int64(gap)
		for k := range int64(run) {
			m.Attempts = append(m.Attempts, cursor.Attempts{Pos: start + k, N: uint16(count)})
		}
		prev = start + int64(run)
	}
	return m, nil
}

// SavedPosition is what a subscription's saved position of one partition
// holds, for operators and tests: the committed offset (every record below
// it is acked), the acked offsets above it, and how often each un-acked
// record at or above it was delivered.
type SavedPosition struct {
	Offset   int64
	Acked    []int64
	Attempts map[int64]uint32
}

// ParseSavedPosition reads a committed offset and its metadata as
// streamgate writes them.
func ParseSavedPosition(offset int64, metadata string) (SavedPosition, error) {
	m, err := decodeMeta(offset, metadata)
	if err != nil {
		return SavedPosition{Offset: offset}, err
	}
	p := SavedPosition{Offset: offset, Acked: m.Acked, Attempts: map[int64]uint32{}}
	for _, a := range m.Attempts {
		p.Attempts[a.Pos] = uint32(a.N)
	}
	return p, nil
}
