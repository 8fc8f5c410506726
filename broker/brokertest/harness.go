// Package brokertest is the conformance suite of the backend contract
// (broker/broker.go): one set of tests, written in gateway words only, that
// every backend's package runs against its own broker with a Harness:
//
//	func TestConformance(t *testing.T) { brokertest.Run(t, newHarness(t)) }
//
// The suite checks what the contract's comments promise: publish results
// and order per shard, shard listing, start positions, acks and what the
// next reader gets, save cadence, resuming after a clean close and after a
// crash, handing a shard to another reader, fencing of a stale reader, the
// per-shard buffer limit, and fetch and save failures when the harness can
// inject them.
package brokertest

import (
	"testing"
	"time"

	"github.com/streamgate/streamgate/broker"
)

// Backend is what a node needs from the broker (node.Backend): publishing,
// the readiness ping and the consume side.
type Backend interface {
	broker.Publisher
	broker.Pinger
	broker.Subscriber
}

// Options are the settings a subtest asks of the backend it starts. A zero
// field leaves the harness's choice, which must not save on its own within
// a test (no saves by count or by time unless asked): the suite saves with
// Confirm, Release and Close, and asks for cadences where it tests them.
type Options struct {
	// SaveEvery: a subscription's acked positions are saved after this many
	// acks. 0: never by count.
	SaveEvery int
	// SaveInterval: acked positions are saved at least this often. 0: not by
	// time (an hour is fine).
	SaveInterval time.Duration
	// MaxBufferedPerShard: the most messages a consumer holds per shard
	// fetched and not yet saved. 0: the backend's default.
	MaxBufferedPerShard int
	// MaxMessageBytes: the largest message (broker.Message.Size) the backend
	// accepts, for backends that have such a limit (see MessageLimiter). 0:
	// the backend's default.
	MaxMessageBytes int
}

// Harness starts the backend under test. Its methods are called from the
// subtests' goroutines, several at once (see Parallelism).
type Harness interface {
	// Backend starts a fresh client of the backend (one node's backend),
	// closed when t ends. Clients started for one Run share one broker.
	Backend(t *testing.T, o Options) Backend
	// CreateTopic creates a topic of shards shards. Names are unique per
	// Run.
	CreateTopic(t *testing.T, name string, shards int)
	// Crash stops b at once and saves nothing, as a killed process would:
	// none of its consumers saves a position from then on, not even in
	// Close.
	Crash(t *testing.T, b Backend)
}

// Optional capabilities, asserted on the Harness; subtests that need one
// the harness lacks are skipped.
type (
	// FetchFaulter makes the backend fail every fetch of messages while on
	// (and nothing else, where the backend allows: publishing and saving
	// keep working). Subtests that use it run alone.
	FetchFaulter interface {
		FetchFault(t *testing.T, on bool)
	}
	// SaveFaulter makes the backend fail every save of a position while on
	// (fetching keeps working where the backend allows). Subtests that use
	// it run alone.
	SaveFaulter interface {
		SaveFault(t *testing.T, on bool)
	}
	// KnownBugs names subtests that fail against this backend for a known
	// bug: KnownBug returns the reason for a subtest's name (as passed to
	// t.Run, for example "Publish/UnknownTopic"), or "" to run it.
	KnownBugs interface {
		KnownBug(subtest string) string
	}
	// Parallelism bounds how many subtests run at once (default 8); 1 runs
	// them one after another.
	Parallelism interface {
		Parallel() int
	}
)

// MessageLimiter is implemented by backends (asserted on the Backend) that
// reject messages above a size: MaxMessageBytes is the largest
// broker.Message.Size they accept.
type MessageLimiter interface {
	MaxMessageBytes() int
}
