package kafka

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
)

// A message id is the record's topic, partition and offset, packed and
// base64url-encoded so that clients treat it as opaque:
//
//	version(1) | uvarint(partition) | uvarint(offset) | topic
const idVersion = 1

var errBadID = errors.New("malformed message id")

// position is where one record lives.
type position struct {
	topic     string
	partition int32
	offset    int64
}

// maxRawID is the longest packed id: Kafka topic names are 1..249 bytes.
const maxRawID = 1 + 2*binary.MaxVarintLen64 + 249

// encodeID packs and encodes p with one allocation, the string itself:
// it runs for every message fetched and published.
func encodeID(p position) string {
	var raw [maxRawID]byte
	buf := append(raw[:0], idVersion)
	buf = binary.AppendUvarint(buf, uint64(p.partition))
	buf = binary.AppendUvarint(buf, uint64(p.offset))
	buf = append(buf, p.topic...)
	var enc [(maxRawID*8 + 5) / 6]byte
	n := base64.RawURLEncoding.EncodedLen(len(buf))
	if n > len(enc) {
		return base64.RawURLEncoding.EncodeToString(buf) // a topic longer than Kafka allows
	}
	base64.RawURLEncoding.Encode(enc[:n], buf)
	return string(enc[:n])
}

func decodeID(id string) (position, error) { return decodeIDIn(id, nil) }

// decodeIDIn is decodeID that takes the topic's string from topics when it
// is there (a subscription's topics), so that decoding an ack allocates
// nothing.
func decodeIDIn(id string, topics map[string]string) (position, error) {
	var raw [maxRawID]byte
	if base64.RawURLEncoding.DecodedLen(len(id)) > len(raw) {
		return position{}, errBadID
	}
	n, err := base64.RawURLEncoding.Decode(raw[:], []byte(id))
	buf := raw[:n]
	if err != nil || len(buf) < 4 || buf[0] != idVersion {
		return position{}, errBadID
	}
	buf = buf[1:]
	part, n := binary.Uvarint(buf)
	if n <= 0 || part > 1<<31-1 {
		return position{}, errBadID
	}
	buf = buf[n:]
	off, n := binary.Uvarint(buf)
	if n <= 0 || off > 1<<63-1 {
		return position{}, errBadID
	}
	buf = buf[n:]
	if len(buf) == 0 || len(buf) > 249 { // Kafka topic names are 1..249 bytes
		return position{}, errBadID
	}
	topic, ok := topics[string(buf)]
	if !ok {
		topic = string(buf)
	}
	return position{topic: topic, partition: int32(part), offset: int64(off)}, nil
}
