package rabbitmq

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"time"

	"github.com/streamgate/streamgate/broker"
)

// The stream protocol confirms a publish by the producer's publishing id,
// never by the offset the message got, so a message id cannot hold the
// offset as the Kafka backend's does. A message this backend publishes
// carries its own id instead (in the envelope below): the publishing
// backend's random 16-byte tag and a counter. Consumers map that id to the
// offset they read it at. A message published by another client has no
// envelope; its id is its offset.
//
//	id = base64url(version(1) | kind(1) | uvarint(shard) | uvarint(len(topic)) | topic | tail)
//	kind 'p': tail = tag(16) | uvarint(counter)
//	kind 'o': tail = uvarint(offset)
const idVersion = 1

var errBadID = errors.New("malformed message id")

// msgRef is what an id names inside its shard: a published message's tag
// and counter (as a string, a map key) or, for foreign messages, an offset.
type msgRef struct {
	shard   broker.ShardID
	tagged  string // kind 'p': tag and counter bytes
	offset  int64  // kind 'o'
	foreign bool
}

func encodeTaggedID(s broker.ShardID, tagged string) string {
	buf := make([]byte, 0, 2+2*binary.MaxVarintLen64+len(s.Topic)+len(tagged))
	buf = append(buf, idVersion, 'p')
	buf = binary.AppendUvarint(buf, uint64(s.Index))
	buf = binary.AppendUvarint(buf, uint64(len(s.Topic)))
	buf = append(buf, s.Topic...)
	buf = append(buf, tagged...)
	return base64.RawURLEncoding.EncodeToString(buf)
}

func encodeOffsetID(s broker.ShardID, offset int64) string {
	buf := make([]byte, 0, 2+3*binary.MaxVarintLen64+len(s.Topic))
	buf = append(buf, idVersion, 'o')
	buf = binary.AppendUvarint(buf, uint64(s.Index))
	buf = binary.AppendUvarint(buf, uint64(len(s.Topic)))
	buf = append(buf, s.Topic...)
	buf = binary.AppendUvarint(buf, uint64(offset))
	return base64.RawURLEncoding.EncodeToString(buf)
}

func decodeID(id string) (msgRef, error) {
	buf, err := base64.RawURLEncoding.DecodeString(id)
	if err != nil || len(buf) < 5 || buf[0] != idVersion || (buf[1] != 'p' && buf[1] != 'o') {
		return msgRef{}, errBadID
	}
	kind := buf[1]
	buf = buf[2:]
	idx, n := binary.Uvarint(buf)
	if n <= 0 || idx > 1<<31-1 {
		return msgRef{}, errBadID
	}
	buf = buf[n:]
	tl, n := binary.Uvarint(buf)
	if n <= 0 || tl == 0 || tl > uint64(len(buf)-n) {
		return msgRef{}, errBadID
	}
	buf = buf[n:]
	r := msgRef{shard: broker.ShardID{Topic: string(buf[:tl]), Index: int32(idx)}}
	buf = buf[tl:]
	if kind == 'p' {
		if len(buf) < 17 {
			return msgRef{}, errBadID
		}
		r.tagged = string(buf)
		return r, nil
	}
	off, n := binary.Uvarint(buf)
	if n <= 0 || n != len(buf) || off > 1<<63-1 {
		return msgRef{}, errBadID
	}
	r.offset, r.foreign = int64(off), true
	return r, nil
}

// The envelope is the AMQP data section of a message this backend
// publishes, marked by the content type envelopeType, so that keys,
// repeated and ordered headers and the id survive unchanged:
//
//	uvarint(len(key)+1, 0: no key) | key | uvarint(headers) |
//	per header uvarint(len) key uvarint(len) value |
//	uvarint(publish time, unix ms) | uvarint(len(tagged)) | tagged | payload
const envelopeType = "application/x-streamgate-1"

func encodeEnvelope(m *broker.Message, tagged string, at time.Time) []byte {
	buf := make([]byte, 0, m.Size()+64)
	if m.Key == nil {
		buf = binary.AppendUvarint(buf, 0)
	} else {
		buf = binary.AppendUvarint(buf, uint64(len(m.Key))+1)
		buf = append(buf, m.Key...)
	}
	buf = binary.AppendUvarint(buf, uint64(len(m.Headers)))
	for _, h := range m.Headers {
		buf = binary.AppendUvarint(buf, uint64(len(h.Key)))
		buf = append(buf, h.Key...)
		buf = binary.AppendUvarint(buf, uint64(len(h.Value)))
		buf = append(buf, h.Value...)
	}
	buf = binary.AppendUvarint(buf, uint64(at.UnixMilli()))
	buf = binary.AppendUvarint(buf, uint64(len(tagged)))
	buf = append(buf, tagged...)
	return append(buf, m.Payload...)
}

var errBadEnvelope = errors.New("malformed streamgate envelope")

// decodeEnvelope fills m's key, headers and payload and returns the
// message's tagged id and publish time. m.Topic is the caller's.
func decodeEnvelope(buf []byte, m *broker.Message) (tagged string, at time.Time, err error) {
	next := func() (uint64, bool) {
		v, n := binary.Uvarint(buf)
		if n <= 0 {
			return 0, false
		}
		buf = buf[n:]
		return v, true
	}
	bytesOf := func(n uint64) ([]byte, bool) {
		if n > uint64(len(buf)) {
			return nil, false
		}
		b := buf[:n:n]
		buf = buf[n:]
		return b, true
	}
	kl, ok := next()
	if !ok {
		return "", at, errBadEnvelope
	}
	if kl > 0 {
		if m.Key, ok = bytesOf(kl - 1); !ok {
			return "", at, errBadEnvelope
		}
	}
	nh, ok := next()
	if !ok || nh > uint64(len(buf)) {
		return "", at, errBadEnvelope
	}
	m.Headers = nil
	for range nh {
		l, ok1 := next()
		k, ok2 := bytesOf(l)
		vl, ok3 := next()
		v, ok4 := bytesOf(vl)
		if !ok1 || !ok2 || !ok3 || !ok4 {
			return "", at, errBadEnvelope
		}
		m.Headers = append(m.Headers, broker.Header{Key: string(k), Value: v})
	}
	ms, ok1 := next()
	tl, ok2 := next()
	t, ok3 := bytesOf(tl)
	if !ok1 || !ok2 || !ok3 || ms > 1<<50 {
		return "", at, errBadEnvelope
	}
	m.Payload = buf
	return string(t), time.UnixMilli(int64(ms)), nil
}
