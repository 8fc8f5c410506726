package auth

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strings"
)

// tokenSet is a parsed tokens file: only the SHA-256 of each token is
// kept, so the file and the process's memory never hold a usable secret.
type tokenSet struct {
	entries []tokenEntry
}

type tokenEntry struct {
	hash   [sha256.Size]byte
	id     string
	groups []string
}

// parseTokens reads a tokens file: one token a line,
//
//	<identity> <sha256-hex-of-token> [group ...]
//
// Blank lines and lines starting with # are skipped. An error names the
// line.
func parseTokens(data []byte) (*tokenSet, error) {
	ts := &tokenSet{}
	seen := map[[sha256.Size]byte]int{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return nil, fmt.Errorf("line %d: want <identity> <sha256-hex-of-token> [group ...]", n)
		}
		raw, err := hex.DecodeString(strings.TrimPrefix(f[1], "sha256:"))
		if err != nil || len(raw) != sha256.Size {
			return nil, fmt.Errorf("line %d: the second field must be the 64 hex digits of the token's SHA-256 (echo -n TOKEN | sha256sum), not the token itself", n)
		}
		e := tokenEntry{id: f[0], groups: f[2:]}
		copy(e.hash[:], raw)
		if prev, dup := seen[e.hash]; dup {
			return nil, fmt.Errorf("line %d: the same token hash as line %d", n, prev)
		}
		seen[e.hash] = n
		ts.entries = append(ts.entries, e)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return ts, nil
}

// lookup finds the identity of token. Every entry is compared, in constant
// time, so the time taken says nothing about which hash came close.
func (ts *tokenSet) lookup(token string) (Identity, bool) {
	h := sha256.Sum256([]byte(token))
	found := -1
	for i := range ts.entries {
		if subtle.ConstantTimeCompare(h[:], ts.entries[i].hash[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return Identity{}, false
	}
	e := ts.entries[found]
	return Identity{Name: e.id, Groups: e.groups, Method: "token"}, true
}
