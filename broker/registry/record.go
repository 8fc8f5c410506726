// Package registry is the backend-neutral part of the subscription store
// (broker.SubscriptionStore): the records a backend appends to a log of
// its own, the View that applies them in log order, and the Store that
// writes through a backend's Log and answers from the View.
//
// Every reader of one log applies the same records in the same order with
// the same deterministic compare-and-set rules (view.go), so every reader
// agrees on every subscription, and a writer learns whether its change
// took effect by waiting until its own view has applied it. A version is
// the log position of the record that made the change, plus one: unique,
// increasing, and 0 never names a stored state.
package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/streamgate/streamgate/broker"
)

// Format is the record format this package writes; a record of a greater
// format is ignored (with a warning) by readers that do not know it.
const Format = 1

// Op is what a record asks for.
type Op string

const (
	// OpCreate stores a subscription; valid when the name is not live.
	OpCreate Op = "create"
	// OpUpdate replaces a live subscription's settings; valid when Expect
	// is its version.
	OpUpdate Op = "update"
	// OpDelete removes a live subscription; valid when Expect is its
	// version. It is a record with a value, so that it can carry a
	// token; on a compacted log the writer follows it with a tombstone.
	OpDelete Op = "delete"
	// OpRestate states a subscription's current state (Version, Live,
	// Settings, Created, Updated) without changing it. A writer appends
	// one after any record of its that was rejected, so that the last
	// record of a key on a compacted log always states the key's state.
	OpRestate Op = "restate"
	// OpSync changes nothing: a write-and-wait that makes the view apply
	// everything appended before it (logs that cannot tell their end).
	OpSync Op = "sync"
)

// Record is one entry of a subscription log, keyed by Name. Created and
// Updated are the writer's clock; a valid record makes the state it
// describes (for create, update and delete the version is its own position
// plus one), so that a reader whose log was compacted down to a key's last
// record learns the same state from that record alone.
type Record struct {
	Format   int       `json:"format"`
	Op       Op        `json:"op"`
	Token    string    `json:"token,omitempty"` // unique per write: the writer waits for it
	Name     string    `json:"name,omitempty"`
	Expect   int64     `json:"expect,omitempty"`  // update, delete: the version replaced
	Version  int64     `json:"version,omitempty"` // restate: the version stated
	Live     bool      `json:"live,omitempty"`    // restate: a live subscription (else deleted)
	Settings *Settings `json:"settings,omitempty"`
	Created  time.Time `json:"created,omitzero"`
	Updated  time.Time `json:"updated,omitzero"`
}

// Settings is the stored form of a broker.SubscriptionConfig's settings.
// Durations are Go duration strings: exact, and readable by whoever dumps
// the log.
type Settings struct {
	Topics              []string `json:"topics"`
	Start               string   `json:"start"` // "latest" or "earliest"
	AckDeadline         string   `json:"ack_deadline,omitempty"`
	MaxUnacked          int      `json:"max_unacked,omitempty"`
	MaxDeliveryAttempts int      `json:"max_delivery_attempts,omitempty"`
	DeadLetterTopic     string   `json:"dead_letter_topic,omitempty"`
	RetryMin            string   `json:"retry_min,omitempty"`
	RetryMax            string   `json:"retry_max,omitempty"`
}

// SettingsOf is the stored form of cfg's settings (Name, Version, Created
// and Updated are not settings).
func SettingsOf(cfg broker.SubscriptionConfig) *Settings {
	dur := func(d time.Duration) string {
		if d == 0 {
			return ""
		}
		return d.String()
	}
	start := "latest"
	if cfg.Start == broker.StartEarliest {
		start = "earliest"
	}
	return &Settings{
		Topics:              append([]string(nil), cfg.Topics...),
		Start:               start,
		AckDeadline:         dur(cfg.AckDeadline),
		MaxUnacked:          cfg.MaxUnacked,
		MaxDeliveryAttempts: cfg.MaxDeliveryAttempts,
		DeadLetterTopic:     cfg.DeadLetterTopic,
		RetryMin:            dur(cfg.RetryMin),
		RetryMax:            dur(cfg.RetryMax),
	}
}

// apply fills cfg's settings from s.
func (s *Settings) apply(cfg *broker.SubscriptionConfig) error {
	var err error
	dur := func(field, v string) time.Duration {
		if v == "" || err != nil {
			return 0
		}
		d, perr := time.ParseDuration(v)
		if perr != nil {
			err = fmt.Errorf("%s: %w", field, perr)
		}
		return d
	}
	switch s.Start {
	case "latest":
		cfg.Start = broker.StartLatest
	case "earliest":
		cfg.Start = broker.StartEarliest
	default:
		return fmt.Errorf("start: unknown value %q", s.Start)
	}
	cfg.Topics = append([]string(nil), s.Topics...)
	cfg.AckDeadline = dur("ack_deadline", s.AckDeadline)
	cfg.MaxUnacked = s.MaxUnacked
	cfg.MaxDeliveryAttempts = s.MaxDeliveryAttempts
	cfg.DeadLetterTopic = s.DeadLetterTopic
	cfg.RetryMin = dur("retry_min", s.RetryMin)
	cfg.RetryMax = dur("retry_max", s.RetryMax)
	return err
}

// Encode is the record's value in the log.
func Encode(r *Record) []byte {
	r.Format = Format
	b, err := json.Marshal(r)
	if err != nil {
		panic(fmt.Sprintf("registry: encoding a record: %v", err)) // plain data: cannot fail
	}
	return b
}

var errBadRecord = errors.New("malformed subscription record")

// Decode reads a record's value, checking everything a reader relies on,
// so that a malformed record is ignored whole rather than half-applied.
func Decode(value []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(value, &r); err != nil {
		return r, fmt.Errorf("%w: %w", errBadRecord, err)
	}
	switch {
	case r.Format < 1 || r.Format > Format:
		return r, fmt.Errorf("%w: format %d (this reader knows 1 to %d)", errBadRecord, r.Format, Format)
	case r.Op == OpSync:
		return r, nil
	case r.Op != OpCreate && r.Op != OpUpdate && r.Op != OpDelete && r.Op != OpRestate:
		return r, fmt.Errorf("%w: unknown op %q", errBadRecord, r.Op)
	case r.Name == "":
		return r, fmt.Errorf("%w: %s without a name", errBadRecord, r.Op)
	case r.Settings == nil && (r.Op != OpDelete && (r.Op != OpRestate || r.Live)):
		return r, fmt.Errorf("%w: %s of %q without settings", errBadRecord, r.Op, r.Name)
	}
	if r.Settings != nil {
		var cfg broker.SubscriptionConfig
		if err := r.Settings.apply(&cfg); err != nil {
			return r, fmt.Errorf("%w: %s of %q: %w", errBadRecord, r.Op, r.Name, err)
		}
	}
	return r, nil
}
