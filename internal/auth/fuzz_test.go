package auth

import (
	"testing"
	"time"
)

// FuzzParsePolicy: any input parses into rules that each name someone and
// grant known actions, or fails with an error; never a panic.
func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte(testPolicy))
	f.Add([]byte(`{"rules":[{"identities":["a"],"actions":["publish"],"topics":["*"]}]}`))
	f.Add([]byte("rules:\n  - groups: [g]\n    actions: [admin]\n    subscriptions: ['x*y*']\n"))
	f.Add([]byte("rules: [ {"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parsePolicy(b)
		if err != nil {
			return
		}
		for _, r := range p.Rules {
			if len(r.Identities)+len(r.Groups) == 0 || len(r.Actions) == 0 {
				t.Fatalf("accepted an empty rule: %+v", r)
			}
		}
		p.Allows(Identity{Name: "a", Groups: []string{"g"}}, Publish, Resource{Topic, "xay"})
	})
}

// FuzzParseTokens: an accepted file's entries each have an identity and
// are found by no token but their own (here: none of the seeds' tokens
// unless listed).
func FuzzParseTokens(f *testing.F) {
	f.Add([]byte("alice " + hashHex("t") + " g1 g2\n# c\n\nbob sha256:" + hashHex("u") + "\n"))
	f.Add([]byte("alice t\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ts, err := parseTokens(b)
		if err != nil {
			return
		}
		for _, e := range ts.entries {
			if e.id == "" {
				t.Fatal("an entry without an identity")
			}
		}
		ts.lookup("t")
	})
}

// FuzzVerifyJWT: any token verifies only with an identity, or fails with
// an error; never a panic.
func FuzzVerifyJWT(f *testing.F) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	f.Add("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4IiwiZXhwIjo5OTk5OTk5OTk5fQ.sig")
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Fuzz(func(t *testing.T, tok string) {
		id, err := verifyJWT(tok, &jwtKeys{secret: secret}, jwtCheck{groupsClaim: "groups", now: time.Unix(1e9, 0)})
		if err == nil && id.Name == "" {
			t.Fatal("verified without an identity")
		}
	})
}
