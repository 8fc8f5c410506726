package registry

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

// memLog is an in-memory log for the tests: Append applies the record to
// every attached view at once, in log order, unless the log is held; then
// records wait until release, as if every reader were behind.
type memLog struct {
	mu      sync.Mutex // guards the fields below; held while applying, so every view sees one order
	recs    []memRec
	views   []*View
	held    bool
	applied int // records applied to the views
	pending chan struct{}
}

type memRec struct {
	key   string
	value []byte
}

func newMemLog() *memLog { return &memLog{pending: make(chan struct{}, 64)} }

func (l *memLog) attach(v *View) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for pos := range l.applied {
		v.Apply(int64(pos), l.recs[pos].key, l.recs[pos].value)
	}
	l.views = append(l.views, v)
}

func (l *memLog) Append(_ context.Context, key string, value []byte) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, memRec{key, value})
	if !l.held {
		l.applyLocked()
	} else {
		select {
		case l.pending <- struct{}{}:
		default:
		}
	}
	return int64(len(l.recs) - 1), nil
}

func (l *memLog) End(context.Context) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return int64(len(l.recs)), nil
}

func (l *memLog) applyLocked() {
	for ; l.applied < len(l.recs); l.applied++ {
		r := l.recs[l.applied]
		for _, v := range l.views {
			v.Apply(int64(l.applied), r.key, r.value)
		}
	}
}

func (l *memLog) hold() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.held = true
}

func (l *memLog) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.held = false
	l.applyLocked()
}

func (l *memLog) unapplied() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.recs) - l.applied
}

func (l *memLog) snapshot() []memRec {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]memRec(nil), l.recs...)
}

// compacted is what Kafka's cleaner leaves of recs after cleaning the
// positions below upTo: of those, only the last record of each key (when
// a later record of the key below upTo exists, the earlier ones go), and
// tombstones too when dropTombstones (delete.retention.ms passed). It
// returns the positions kept with their records.
func compacted(recs []memRec, upTo int, dropTombstones bool) map[int]memRec {
	last := map[string]int{}
	for pos := range upTo {
		last[recs[pos].key] = pos
	}
	out := map[int]memRec{}
	for pos, r := range recs {
		if pos < upTo && (last[r.key] != pos || (dropTombstones && len(r.value) == 0)) {
			continue
		}
		out[pos] = r
	}
	return out
}

// replay applies recs (by position, in order) to a fresh view.
func replay(recs map[int]memRec, n int) *View {
	v := NewView(true, nil)
	for pos := range n {
		if r, ok := recs[pos]; ok {
			v.Apply(int64(pos), r.key, r.value)
		}
	}
	return v
}

// attachLagging makes v read the log on a goroutine of its own, a random
// few microseconds behind, as a backend's reader is: writers then race
// with views that have not applied each other's records yet. The
// goroutine ends when stop is closed; wait for done.
func (l *memLog) attachLagging(v *View, seed uint64, stop <-chan struct{}) (done <-chan struct{}) {
	d := make(chan struct{})
	go func() {
		defer close(d)
		r := rand.New(rand.NewPCG(seed, 1))
		pos := 0
		t := time.NewTicker(50 * time.Microsecond)
		defer t.Stop()
		for {
			l.mu.Lock()
			n := len(l.recs)
			l.mu.Unlock()
			for ; pos < n; pos++ {
				l.mu.Lock()
				rec := l.recs[pos]
				l.mu.Unlock()
				if r.IntN(4) == 0 {
					time.Sleep(time.Duration(r.IntN(200)) * time.Microsecond) // a reader's lag, not synchronisation
				}
				v.Apply(int64(pos), rec.key, rec.value)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	return d
}
