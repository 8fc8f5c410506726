package auth

import (
	"crypto/sha256"
	"fmt"
	"os"
)

// watchedFile is one file Auth re-reads; only Run (and New before it)
// touch it.
type watchedFile struct {
	path, what string
	load       func([]byte) error // parses and swaps in
	last       [sha256.Size]byte  // the content last tried, loaded or not
	tried      bool
}

// check reads the file and loads it if its content changed since the
// last try. changed is false when the content is what was last tried, so
// a broken file is reported once, not every interval.
func (f *watchedFile) check() (changed bool, err error) {
	b, err := os.ReadFile(f.path)
	if err != nil {
		// A file being replaced may be missing for a moment: keep what
		// was loaded, and say so once.
		sum := sha256.Sum256([]byte("unreadable: " + err.Error()))
		changed = !f.tried || sum != f.last
		f.last, f.tried = sum, true
		return changed, fmt.Errorf("%s %s: %w", f.what, f.path, err)
	}
	sum := sha256.Sum256(b)
	if f.tried && sum == f.last {
		return false, nil
	}
	f.last, f.tried = sum, true
	if err := f.load(b); err != nil {
		return true, fmt.Errorf("%s %s: %w", f.what, f.path, err)
	}
	return true, nil
}
