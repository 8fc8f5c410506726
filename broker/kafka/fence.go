package kafka

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

// Saves are fenced with Kafka's own zombie fencing: every partition of a
// subscription has a transactional id of its own (the reader fence), and a
// position is committed only inside a transaction of that id
// (AddOffsetsToTxn, TxnOffsetCommit, EndTxn), with the producer epoch the
// reader got when it started reading the partition (InitProducerID). A new
// reader's InitProducerID bumps the epoch and aborts any transaction the
// old one left open, so every later save of the old reader fails with
// PRODUCER_FENCED: a reader that was frozen, or cut off, can never move a
// saved position backwards.
//
// The first save of a partition's start (a new subscription, or a shard
// added to a topic) is a compare-and-set under a second id per partition,
// the start fence: a writer takes it, reads, and writes the start only if
// there is still none; of two that race, the second one's fence makes the
// first one's write fail, and the first one then reads the second one's
// start. Prepare takes only start fences, so preparing never fences a
// reader; a reader's progress only ever follows a start it read or wrote,
// so a start write never overwrites progress.
//
// The requests are pinned to the versions before KIP-890 (EndTxn v4,
// TxnOffsetCommit v4), which keep one epoch across transactions and need
// AddOffsetsToTxn: every Kafka since 2.5 accepts them.

// fenceTxnTimeout bounds a transaction the broker keeps open for a reader
// that died in the middle of a save; a new reader aborts it at once anyway.
const fenceTxnTimeout = 60_000 // ms

// errFenced: another reader took the partition's fence.
var errFenced = errors.New("fenced: another reader has the shard")

// fence is a reader's hold on one partition's saves.
type fence struct {
	txnID string
	pid   int64
	epoch int16
}

// fencedVersions caps the transaction requests at their pre-KIP-890
// versions.
func fencedVersions() *kversion.Versions {
	v := kversion.Stable()
	v.SetMaxKeyVersion(26, 4) // EndTxn
	v.SetMaxKeyVersion(28, 4) // TxnOffsetCommit
	return v
}

// readerID names the reader fence of one partition of a group. Topic
// names cannot hold '#', so the last '#' always separates the group from
// the topic.
func readerID(group string, k tp) string {
	return group + "#" + k.topic + "-" + strconv.Itoa(int(k.partition))
}

// startID names the start fence of one partition of a group; no reader id
// ends in "#start" (they end in "-<partition>").
func startID(group string, k tp) string { return readerID(group, k) + "#start" }

// takeFence makes this caller the only one whose saves under the id
// (readerID or startID of k) succeed.
func takeFence(ctx context.Context, cl *kgo.Client, id string, k tp) (*fence, error) {
	req := kmsg.NewPtrInitProducerIDRequest()
	req.TransactionalID = &id
	req.TransactionTimeoutMillis = fenceTxnTimeout
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return nil, fmt.Errorf("taking the fence of %s/%d: %w", k.topic, k.partition, err)
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return nil, fmt.Errorf("taking the fence of %s/%d: %w", k.topic, k.partition, err)
	}
	return &fence{txnID: id, pid: resp.ProducerID, epoch: resp.ProducerEpoch}, nil
}

// fencedCommit commits one partition's offset and metadata in a
// transaction of its fence. It returns an error wrapping errFenced when
// another reader has taken the fence since.
func fencedCommit(ctx context.Context, cl *kgo.Client, group string, f *fence, k tp, at int64, meta string) error {
	add := kmsg.NewPtrAddOffsetsToTxnRequest()
	add.TransactionalID, add.ProducerID, add.ProducerEpoch, add.Group = f.txnID, f.pid, f.epoch, group
	addResp, err := add.RequestWith(ctx, cl)
	if err != nil {
		return err
	}
	if err := txnErr(addResp.ErrorCode); err != nil {
		return err
	}

	commit := kmsg.NewPtrTxnOffsetCommitRequest()
	commit.TransactionalID, commit.ProducerID, commit.ProducerEpoch = f.txnID, f.pid, f.epoch
	commit.Group, commit.Generation = group, -1 // a "simple" commit: the gateway assigns, not a group
	topic := kmsg.NewTxnOffsetCommitRequestTopic()
	topic.Topic = k.topic
	part := kmsg.NewTxnOffsetCommitRequestTopicPartition()
	part.Partition, part.Offset, part.LeaderEpoch = k.partition, at, -1
	part.Metadata = &meta
	topic.Partitions = append(topic.Partitions, part)
	commit.Topics = append(commit.Topics, topic)
	commitResp, err := commit.RequestWith(ctx, cl)
	code := int16(0)
	if err == nil {
		if len(commitResp.Topics) != 1 || len(commitResp.Topics[0].Partitions) != 1 {
			err = errors.New("TxnOffsetCommit: the broker answered for other partitions")
		} else {
			code = commitResp.Topics[0].Partitions[0].ErrorCode
		}
	}
	if err == nil {
		err = txnErr(code)
	}
	// End the transaction either way: committed on success; aborted on
	// failure, so that a retry starts clean. A lost answer is retried by
	// the caller's next save; the broker takes a repeated EndTxn.
	end := kmsg.NewPtrEndTxnRequest()
	end.TransactionalID, end.ProducerID, end.ProducerEpoch, end.Commit = f.txnID, f.pid, f.epoch, err == nil
	endResp, endErr := end.RequestWith(ctx, cl)
	if endErr == nil {
		endErr = txnErr(endResp.ErrorCode)
	}
	if err != nil {
		if errors.Is(endErr, errFenced) {
			return endErr
		}
		return err
	}
	return endErr
}

// txnErr maps a transaction error code; the codes that mean another
// producer took the transactional id wrap errFenced.
func txnErr(code int16) error {
	err := kerr.ErrorForCode(code)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, kerr.ProducerFenced), errors.Is(err, kerr.InvalidProducerEpoch),
		errors.Is(err, kerr.InvalidProducerIDMapping), errors.Is(err, kerr.TransactionalIDNotFound):
		return fmt.Errorf("%w: %w", errFenced, err)
	}
	return err
}
