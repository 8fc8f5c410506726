package kafka

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strings"
)

// savedMeta is what a commit's metadata carries beside the committed
// offset: how the subscription started, the acked offsets above it,
// ascending, and the delivery counts of un-acked records at or above it,
// ascending.
type savedMeta struct {
	origin   origin
	acked    []int64
	attempts []attempts
}

// Commit metadata, version 2: "sg2:" and base64 of
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

func encodeMeta(committed int64, m savedMeta) string {
	if len(m.acked) == 0 && len(m.attempts) == 0 && m.origin == (origin{}) {
		return ""
	}
	head := uint64(m.origin.createdMs) << 1
	if m.origin.earliest {
		head |= 1
	}
	budget := base64.RawStdEncoding.DecodedLen(maxMetaBytes-len(metaPrefix)) - 2*binary.MaxVarintLen64
	var acks []byte
	runs := 0
	prev := committed
	for i := 0; i < len(m.acked); {
		j := i + 1
		for j < len(m.acked) && m.acked[j] == m.acked[j-1]+1 {
			j++
		}
		n := len(acks)
		acks = binary.AppendUvarint(acks, uint64(m.acked[i]-prev))
		acks = binary.AppendUvarint(acks, uint64(j-i))
		if len(acks) > budget {
			acks = acks[:n]
			break
		}
		runs++
		prev = m.acked[j-1] + 1
		i = j
	}
	buf := binary.AppendUvarint(nil, head)
	buf = binary.AppendUvarint(buf, uint64(runs))
	buf = append(buf, acks...)
	prev = committed
	for i := 0; i < len(m.attempts); {
		j := i + 1
		for j < len(m.attempts) && m.attempts[j].offset == m.attempts[j-1].offset+1 && m.attempts[j].n == m.attempts[i].n {
			j++
		}
		n := len(buf)
		buf = binary.AppendUvarint(buf, uint64(m.attempts[i].offset-prev))
		buf = binary.AppendUvarint(buf, uint64(j-i))
		buf = binary.AppendUvarint(buf, uint64(m.attempts[i].n))
		if len(buf) > budget+2*binary.MaxVarintLen64 {
			buf = buf[:n]
			break
		}
		prev = m.attempts[j-1].offset + 1
		i = j
	}
	return metaPrefix + base64.RawStdEncoding.EncodeToString(buf)
}

func decodeMeta(committed int64, meta string) (savedMeta, error) {
	var m savedMeta
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
		m.origin = origin{createdMs: int64(head >> 1), earliest: head&1 == 1}
	}
	prev := committed
	for ; runs > 0 && len(buf) > 0; runs-- {
		gap, ok1 := next()
		run, ok2 := next()
		if !ok1 || !ok2 || run == 0 || run > 1<<20 || gap > 1<<40 {
			return savedMeta{}, errBadMeta
		}
		if len(m.acked)+int(run) > maxMetaRecords {
			return savedMeta{}, errBadMeta
		}
		start := prev + int64(gap)
		for k := range int64(run) {
			m.acked = append(m.acked, start+k)
		}
		prev = start + int64(run)
	}
	if !v1 && runs > 0 {
		return savedMeta{}, errBadMeta
	}
	prev = committed
	for len(buf) > 0 {
		gap, ok1 := next()
		run, ok2 := next()
		count, ok3 := next()
		if !ok1 || !ok2 || !ok3 || run == 0 || run > 1<<20 || gap > 1<<40 || count == 0 || count > 1<<16-1 {
			return savedMeta{}, errBadMeta
		}
		if len(m.attempts)+int(run) > maxMetaRecords {
			return savedMeta{}, errBadMeta
		}
		start := prev + int64(gap)
		for k := range int64(run) {
			m.attempts = append(m.attempts, attempts{offset: start + k, n: uint16(count)})
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
	p := SavedPosition{Offset: offset, Acked: m.acked, Attempts: map[int64]uint32{}}
	for _, a := range m.attempts {
		p.Attempts[a.offset] = uint32(a.n)
	}
	return p, nil
}
