package auth

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Policy is a parsed policy file: a list of rules, each granting its
// identities and groups some actions on topics and subscriptions whose
// names match its patterns. Nothing is allowed that no rule grants.
type Policy struct {
	Rules []Rule `yaml:"rules" json:"rules"`
}

// Rule is one grant. A pattern is a name in which * stands for any run of
// characters ("orders.*" is every name starting "orders."; "*" is every
// name).
type Rule struct {
	// Identities and Groups say whom the rule is for: a caller matches
	// when its name matches one of Identities or one of its groups
	// matches one of Groups.
	Identities []string `yaml:"identities" json:"identities"`
	Groups     []string `yaml:"groups" json:"groups"`
	// Actions: publish, subscribe, admin.
	Actions []Action `yaml:"actions" json:"actions"`
	// Topics the rule's publish and subscribe apply to.
	Topics []string `yaml:"topics" json:"topics"`
	// Subscriptions the rule's subscribe and admin apply to; an admin
	// rule whose subscriptions include "*" also allows the cluster-wide
	// calls (ListMembers, ListSubscriptions).
	Subscriptions []string `yaml:"subscriptions" json:"subscriptions"`
}

// parsePolicy reads a policy in YAML or JSON (JSON is YAML). Unknown keys
// are errors, so a misspelt key does not silently grant nothing.
func parsePolicy(data []byte) (*Policy, error) {
	var p Policy
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if len(p.Rules) == 0 {
		return nil, errors.New("no rules: a policy that allows nothing is more likely a mistake; write one rule")
	}
	for i, r := range p.Rules {
		if err := r.check(); err != nil {
			return nil, fmt.Errorf("rule %d: %w", i+1, err)
		}
	}
	return &p, nil
}

func (r *Rule) check() error {
	if len(r.Identities) == 0 && len(r.Groups) == 0 {
		return errors.New("names no identities and no groups")
	}
	if len(r.Actions) == 0 {
		return errors.New("grants no actions (publish, subscribe, admin)")
	}
	for _, a := range r.Actions {
		switch a {
		case Publish, Subscribe:
			if len(r.Topics) == 0 {
				return fmt.Errorf("grants %s but names no topics", a)
			}
			if a == Subscribe && len(r.Subscriptions) == 0 {
				return errors.New("grants subscribe but names no subscriptions")
			}
		case Admin:
			if len(r.Subscriptions) == 0 {
				return errors.New("grants admin but names no subscriptions")
			}
		default:
			return fmt.Errorf("unknown action %q: want publish, subscribe or admin", a)
		}
	}
	for _, l := range [][]string{r.Identities, r.Groups, r.Topics, r.Subscriptions} {
		if slices.Contains(l, "") {
			return errors.New("an empty pattern (use \"*\" for every name)")
		}
	}
	return nil
}

// Allows says whether some rule grants id the action on res.
func (p *Policy) Allows(id Identity, action Action, res Resource) bool {
	for i := range p.Rules {
		r := &p.Rules[i]
		if !slices.Contains(r.Actions, action) || !r.matches(id) {
			continue
		}
		switch res.Kind {
		case Topic:
			if action != Admin && matchAny(r.Topics, res.Name) {
				return true
			}
		case Subscription:
			if action != Publish && matchAny(r.Subscriptions, res.Name) {
				return true
			}
		case Cluster:
			if action == Admin && slices.Contains(r.Subscriptions, "*") {
				return true
			}
		}
	}
	return false
}

func (r *Rule) matches(id Identity) bool {
	if matchAny(r.Identities, id.Name) {
		return true
	}
	for _, g := range id.Groups {
		if matchAny(r.Groups, g) {
			return true
		}
	}
	return false
}

func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if glob(p, name) {
			return true
		}
	}
	return false
}

// glob matches name against pattern, where * is any run of characters
// (dots and slashes included) and everything else is literal.
func glob(pattern, name string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == name
	}
	if !strings.HasPrefix(name, parts[0]) {
		return false
	}
	name = name[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(name, p)
		if i < 0 {
			return false
		}
		name = name[i+len(p):]
	}
	return len(name) >= len(last) && strings.HasSuffix(name, last)
}
