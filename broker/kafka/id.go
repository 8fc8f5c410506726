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

func encodeID(p position) string {
	buf := make([]byte, 0, 1+2*binary.MaxVarintLen64+len(p.topic))
	buf = append(buf, idVersion)
	buf = binary.AppendUvarint(buf, uint64(p.partition))
	buf = binary.AppendUvarint(buf, uint64(p.offset))
	buf = append(buf, p.topic...)
	return base64.RawURLEncoding.EncodeToString(buf)
}

func decodeID(id string) (position, error) {
	buf, err := base64.RawURLEncoding.DecodeString(id)
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
	return position{topic: string(buf), partition: int32(part), offset: int64(off)}, nil
}
