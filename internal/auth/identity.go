// Package auth authenticates gRPC callers (client certificates, static
// bearer tokens, JWTs) and authorizes what they do against a policy file.
// The node wires it in as interceptors and asks it per message and per
// subscription; files are re-read on change by a watcher the node owns.
package auth

import (
	"context"
	"fmt"
)

// Identity is an authenticated caller.
type Identity struct {
	// Name is the certificate's subject (CN, else its first SAN), the
	// token file's identity, or the JWT's sub.
	Name string
	// Groups come from the token file, the JWT's groups claim, or the
	// certificate's organizational units.
	Groups []string
	// Method says how the caller proved it: "mtls", "token" or "jwt".
	Method string
}

type identityKey struct{}

// NewContext returns ctx carrying id.
func NewContext(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// FromContext returns the identity the interceptors put in ctx.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

// Action is what a policy rule allows.
type Action string

// The actions a policy grants.
const (
	Publish   Action = "publish"
	Subscribe Action = "subscribe"
	Admin     Action = "admin"
)

// Kind names what an action is done on.
type Kind string

// The kinds of resources.
const (
	Topic        Kind = "topic"
	Subscription Kind = "subscription"
	// Cluster is the whole node set: listing members or subscriptions.
	Cluster Kind = "cluster"
)

// Resource is what an action is done on.
type Resource struct {
	Kind Kind
	Name string // empty for Cluster
}

func (r Resource) String() string {
	if r.Kind == Cluster {
		return "the cluster"
	}
	return fmt.Sprintf("%s %q", r.Kind, r.Name)
}

// DeniedError says that the policy refuses an identity an action on a
// resource; the node answers it with PERMISSION_DENIED.
type DeniedError struct {
	Identity string
	Action   Action
	Resource Resource
}

func (e *DeniedError) Error() string {
	return fmt.Sprintf("identity %q may not %s %s: no rule of the policy file allows it", e.Identity, e.Action.verb(), e.Resource)
}

// verb is the action as it reads before its resource.
func (a Action) verb() string {
	switch a {
	case Publish:
		return "publish to"
	case Subscribe:
		return "subscribe to"
	case Admin:
		return "administer"
	}
	return string(a)
}
