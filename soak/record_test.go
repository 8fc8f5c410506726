package soak

import (
	"cmp"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// record is what the clients saw, and what the fault injector did, with
// times, so that every redelivery can be explained after the run.
type record struct {
	mu        sync.Mutex
	start     time.Time
	published map[string]string // message id -> payload, for results OK
	failed    int               // publish results that were not OK, or never came
	msgs      map[string]*msgLog
	sessions  map[int]*sessionLog
	faults    []fault
	nextSess  int
	byPayload map[string]*msgLog // built by ackedPayload
	openFails map[string]int     // why opens failed, with counts
}

// openFailed counts a Subscribe that was refused or timed out.
func (r *record) openFailed(node string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.openFails == nil {
		r.openFails = map[string]int{}
	}
	msg := err.Error()
	if len(msg) > 120 {
		msg = msg[:120]
	}
	r.openFails[node+": "+msg]++
}

// msgLog is one message's deliveries and acks.
type msgLog struct {
	payload    string
	shard      string
	deliveries []deliveryLog
	acked      time.Time // first ack sent; zero: never
	nacked     map[int]bool
}

type deliveryLog struct {
	sess    int
	at      time.Time
	attempt uint32
}

// sessionLog is one Subscribe stream.
type sessionLog struct {
	id     int
	node   string
	opened time.Time
	ended  time.Time
	// why it ended, as far as the client knows: "churn" (the client left),
	// "stall" (it stopped acking on purpose and was cut off), or the
	// status the stream ended with.
	why    string
	voided bool // it got a notice that messages it held were void
}

// fault is one thing the injector did.
type fault struct {
	kind       string // kill, drain, freeze, fetch-faults, save-faults
	node       string // "" for broker faults
	start, end time.Time
}

func newRecord() *record {
	return &record{start: time.Now(), published: map[string]string{}, msgs: map[string]*msgLog{}, sessions: map[int]*sessionLog{}}
}

func (r *record) openSession(node string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nextSess++
	r.sessions[r.nextSess] = &sessionLog{id: r.nextSess, node: node, opened: time.Now()}
	return r.nextSess
}

func (r *record) endSession(id int, why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.sessions[id]; s != nil && s.ended.IsZero() {
		s.ended, s.why = time.Now(), why
	}
}

func (r *record) voided(id int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sessions[id].voided = true
}

func (r *record) delivered(sess int, id, shard, payload string, attempt uint32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.msgs[id]
	if m == nil {
		m = &msgLog{payload: payload, shard: shard, nacked: map[int]bool{}}
		r.msgs[id] = m
	}
	m.deliveries = append(m.deliveries, deliveryLog{sess: sess, at: time.Now(), attempt: attempt})
}

func (r *record) acked(ids []string) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		if m := r.msgs[id]; m != nil && m.acked.IsZero() {
			m.acked = now
		}
	}
}

func (r *record) nacked(sess int, id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs[id].nacked[sess] = true
}

func (r *record) addFault(f fault) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.faults = append(r.faults, f)
}

func (r *record) publishedOK(id, payload string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.published[id] = payload
}

func (r *record) publishFailed(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed += n
}

// causeOf explains why a message was delivered again: what happened to
// the delivery before.
func (r *record) causeOf(m *msgLog, prev, next deliveryLog) string {
	if m.nacked[prev.sess] {
		return "nack"
	}
	// A fault of the node the previous delivery came from, between it and
	// this one.
	s := r.sessions[prev.sess]
	for _, f := range r.faults {
		if f.node == s.node && !f.start.Before(prev.at.Add(-50*time.Millisecond)) && f.start.Before(next.at) {
			return f.kind
		}
	}
	switch s.why {
	case "stall":
		return "stall"
	case "churn":
		return "churn"
	}
	if s.voided {
		return "moved (void)"
	}
	return "unexplained"
}

// summary counts redeliveries by cause.
type summary struct {
	messages, deliveries int
	byCause              map[string]int
	unexplained          []string
}

func (r *record) summarize() summary {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := summary{byCause: map[string]int{}}
	for id, m := range r.msgs {
		s.messages++
		s.deliveries += len(m.deliveries)
		for i := 1; i < len(m.deliveries); i++ {
			c := r.causeOf(m, m.deliveries[i-1], m.deliveries[i])
			s.byCause[c]++
			if c == "unexplained" && len(s.unexplained) < 10 {
				prev := m.deliveries[i-1]
				ses := r.sessions[prev.sess]
				s.unexplained = append(s.unexplained, fmt.Sprintf("%s (%s) delivered at +%s on session %d (%s, ended +%s: %s), again at +%s",
					id, m.shard, prev.at.Sub(r.start).Round(time.Millisecond), prev.sess, ses.node,
					ses.ended.Sub(r.start).Round(time.Millisecond), ses.why, m.deliveries[i].at.Sub(r.start).Round(time.Millisecond)))
			}
		}
	}
	return s
}

func (s summary) String() string {
	causes := make([]string, 0, len(s.byCause))
	for c := range s.byCause {
		causes = append(causes, c)
	}
	sort.Strings(causes)
	var b strings.Builder
	fmt.Fprintf(&b, "%d messages, %d deliveries, %d redeliveries", s.messages, s.deliveries, s.deliveries-s.messages)
	for _, c := range causes {
		fmt.Fprintf(&b, "; %s %d", c, s.byCause[c])
	}
	return b.String()
}

// firstDeliveries returns, per shard, the message ids in the order they
// were first delivered.
func (r *record) firstDeliveries() map[string][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	type first struct {
		id string
		at time.Time
	}
	by := map[string][]first{}
	for id, m := range r.msgs {
		by[m.shard] = append(by[m.shard], first{id, m.deliveries[0].at})
	}
	out := map[string][]string{}
	for shard, fs := range by {
		slices.SortFunc(fs, func(a, b first) int { return a.at.Compare(b.at) })
		for _, f := range fs {
			out[shard] = append(out[shard], f.id)
		}
	}
	return out
}

// sortedFaults returns the faults in start order.
func (r *record) sortedFaults() []fault {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := slices.Clone(r.faults)
	slices.SortFunc(out, func(a, b fault) int { return cmp.Compare(a.start.UnixNano(), b.start.UnixNano()) })
	return out
}
