package devbroker

// TLS, SASL users and ACLs of the development broker, for trying the
// gateway's Kafka security settings locally.

import (
	"crypto/tls"
	"fmt"
	"strings"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// User is a SASL user of the broker.
type User struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
	Mechanism, Name, Password string
	// Super users pass every ACL check; others get only what ACLs allow
	// once ACLs are on.
	Super bool
	// ACLs are this user's ACLs, created at start.
	ACLs []kfake.ACL
}

// ParseUser reads "mechanism:name:password" (mechanism in any case).
func ParseUser(s string) (User, error) {
	parts := strings.SplitN(s, ":", 3)
	if len(parts) != 3 || parts[1] == "" || parts[2] == "" {
		return User{}, fmt.Errorf("%q: want mechanism:name:password such as scram-sha-256:gateway:secret", redact(s))
	}
	u := User{Mechanism: strings.ToUpper(parts[0]), Name: parts[1], Password: parts[2]}
	switch u.Mechanism {
	case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
	default:
		return User{}, fmt.Errorf("mechanism %q: want plain, scram-sha-256 or scram-sha-512", parts[0])
	}
	return u, nil
}

// redact hides what follows a second colon (a password).
func redact(s string) string {
	parts := strings.SplitN(s, ":", 3)
	if len(parts) == 3 {
		parts[2] = "***"
	}
	return strings.Join(parts, ":")
}

var (
	aclResources = map[string]kmsg.ACLResourceType{
		"topic": kmsg.ACLResourceTypeTopic, "group": kmsg.ACLResourceTypeGroup,
		"cluster": kmsg.ACLResourceTypeCluster, "transactional-id": kmsg.ACLResourceTypeTransactionalId,
	}
	aclOperations = map[string]kmsg.ACLOperation{
		"all": kmsg.ACLOperationAll, "read": kmsg.ACLOperationRead, "write": kmsg.ACLOperationWrite,
		"create": kmsg.ACLOperationCreate, "delete": kmsg.ACLOperationDelete, "alter": kmsg.ACLOperationAlter,
		"describe": kmsg.ACLOperationDescribe, "idempotent-write": kmsg.ACLOperationIdempotentWrite,
		"describe-configs": kmsg.ACLOperationDescribeConfigs, "alter-configs": kmsg.ACLOperationAlterConfigs,
	}
)

// ParseACL reads "allow|deny:user:resource:name:operation", resource one
// of topic, group, cluster, transactional-id; a name ending in * is a
// prefix ("orders*"), "*" alone every name.
func ParseACL(s string) (user string, acl kfake.ACL, err error) {
	parts := strings.Split(s, ":")
	bad := func(why string) (string, kfake.ACL, error) {
		return "", kfake.ACL{}, fmt.Errorf("%q: %s; want allow|deny:user:topic|group|cluster|transactional-id:name[*]:operation such as allow:gateway:topic:orders*:all", s, why)
	}
	if len(parts) != 5 || parts[1] == "" || parts[3] == "" {
		return bad("five fields")
	}
	switch parts[0] {
	case "allow":
		acl.Allow = true
	case "deny":
	default:
		return bad("allow or deny first")
	}
	var ok bool
	if acl.Resource, ok = aclResources[parts[2]]; !ok {
		return bad(fmt.Sprintf("unknown resource %q", parts[2]))
	}
	if acl.Operation, ok = aclOperations[parts[4]]; !ok {
		return bad(fmt.Sprintf("unknown operation %q", parts[4]))
	}
	acl.Name, acl.Pattern = parts[3], kmsg.ACLResourcePatternTypeLiteral
	if n, prefix := strings.CutSuffix(parts[3], "*"); prefix && n != "" {
		acl.Name, acl.Pattern = n, kmsg.ACLResourcePatternTypePrefixed
	}
	if acl.Resource == kmsg.ACLResourceTypeCluster {
		acl.Name, acl.Pattern = "kafka-cluster", kmsg.ACLResourcePatternTypeLiteral
	}
	return parts[1], acl, nil
}

// validateSecurity names the first bad security field.
func (c *Config) validateSecurity() error {
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return fmt.Errorf("devbroker: TLSCertFile and TLSKeyFile: give both or neither")
	}
	super := false
	for _, u := range c.Users {
		if _, err := ParseUser(u.Mechanism + ":" + u.Name + ":" + u.Password); err != nil {
			return fmt.Errorf("devbroker: Users: %w", err)
		}
		super = super || u.Super
		if u.Super && len(u.ACLs) > 0 {
			return fmt.Errorf("devbroker: Users: %s is a superuser: ACLs do not apply to it", u.Name)
		}
	}
	if c.ACLs && !super {
		return fmt.Errorf("devbroker: ACLs: need a superuser, or nobody can do anything")
	}
	if c.ACLs && !c.SASL {
		return fmt.Errorf("devbroker: ACLs: need SASL, which names the users they apply to")
	}
	return nil
}

// securityOpts are kfake's options for the TLS, SASL and ACL settings.
func (c *Config) securityOpts() ([]kfake.Opt, error) {
	var opts []kfake.Opt
	if c.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("devbroker: TLSCertFile %s and TLSKeyFile %s: %w", c.TLSCertFile, c.TLSKeyFile, err)
		}
		opts = append(opts, kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}))
	}
	if c.SASL {
		opts = append(opts, kfake.EnableSASL())
	}
	for _, u := range c.Users {
		if u.Super {
			opts = append(opts, kfake.Superuser(u.Mechanism, u.Name, u.Password))
		} else {
			opts = append(opts, kfake.User(u.Mechanism, u.Name, u.Password, u.ACLs...))
		}
	}
	if c.ACLs {
		opts = append(opts, kfake.EnableACLs())
	}
	return opts, nil
}
