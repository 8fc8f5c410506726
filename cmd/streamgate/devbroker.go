package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/streamgate/streamgate/internal/devbroker"
)

func runDevbroker(ctx context.Context, args []string, stderr io.Writer) error {
	cfg := devbroker.DefaultConfig()
	cfg.Addr = "127.0.0.1:9092"
	var topics, superusers, users, acls listFlag
	logFormat, logLevel := "text", "info"
	fs := newFlagSet("devbroker", stderr)
	fs.StringVar(&cfg.Addr, "addr", cfg.Addr, "listen address (0.0.0.0:9092 to accept other hosts and containers)")
	fs.StringVar(&cfg.AdvertiseHost, "advertise-host", cfg.AdvertiseHost, "host name clients are told to connect to (default: the listen host)")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "persist the broker's state in this folder (default: memory only)")
	fs.Var(&topics, "topics", "comma-separated topics to create at start")
	fs.IntVar(&cfg.Partitions, "partitions", cfg.Partitions, "shards per created topic")
	fs.BoolVar(&cfg.AutoCreateTopics, "auto-create-topics", cfg.AutoCreateTopics, "create topics on first use")
	fs.StringVar(&cfg.TLSCertFile, "tls-cert", "", "PEM certificate: the broker speaks TLS only (with --tls-key)")
	fs.StringVar(&cfg.TLSKeyFile, "tls-key", "", "PEM private key of --tls-cert")
	fs.BoolVar(&cfg.SASL, "sasl", false, "require SASL (implied by --superuser and --user; alone: SCRAM-SHA-256 admin/admin)")
	fs.Var(&superusers, "superuser", "comma-separated SASL superusers, mechanism:name:password (plain, scram-sha-256 or scram-sha-512); ACLs do not apply to them")
	fs.Var(&users, "user", "comma-separated SASL users, mechanism:name:password, subject to --acl")
	fs.BoolVar(&cfg.ACLs, "acls", false, "check every request against ACLs: users may do only what an --acl allows (implied by --acl; needs a --superuser)")
	fs.Var(&acls, "acl", "comma-separated ACLs of --user users, allow|deny:user:topic|group|cluster|transactional-id:name[*]:operation, such as allow:gateway:topic:orders*:all")
	fs.StringVar(&logFormat, "log-format", logFormat, "text or json")
	fs.StringVar(&logLevel, "log-level", logLevel, "debug, info, warn or error")
	src, err := parseSettings(fs, args, osLookupEnv)
	if err != nil {
		return err
	}
	log, err := newLogger(logFormat, logLevel, stderr)
	if err != nil {
		return badUsage("devbroker", err)
	}
	cfg.Topics = topics
	if err := devbrokerUsers(&cfg, superusers, users, acls, src); err != nil {
		return badUsage("devbroker", err)
	}
	if err := checkAddr(src, "addr", cfg.Addr, "127.0.0.1:9092"); err != nil {
		return badUsage("devbroker", err)
	}
	if err := cfg.Validate(); err != nil {
		return badUsage("devbroker", namedByFlags(err, "devbroker", devbrokerFlags, src))
	}
	b, err := devbroker.Start(cfg)
	if err != nil {
		return err
	}
	defer b.Close()
	log.Info("devbroker listening; data is not durable unless --data-dir is set",
		"addr", b.ListenAddr(), "advertised", b.ListenAddrs()[0], "topics", cfg.Topics, "partitions", cfg.Partitions,
		"tls", cfg.TLSCertFile != "", "sasl", cfg.SASL, "users", userNames(cfg.Users), "acls", cfg.ACLs)
	<-ctx.Done()
	log.Info("devbroker stopping")
	return nil
}

// devbrokerUsers parses the --superuser, --user and --acl lists into cfg;
// users and ACLs turn on SASL and ACL checks. Messages never repeat a
// password.
func devbrokerUsers(cfg *devbroker.Config, superusers, users, acls []string, src sources) error {
	byName := map[string]int{}
	for _, list := range []struct {
		flag  string
		items []string
		super bool
	}{{"superuser", superusers, true}, {"user", users, false}} {
		for _, s := range list.items {
			u, err := devbroker.ParseUser(s)
			if err != nil {
				return fmt.Errorf("%s %w", src.describe(list.flag), err)
			}
			u.Super = list.super
			byName[u.Name] = len(cfg.Users)
			cfg.Users = append(cfg.Users, u)
		}
	}
	for _, s := range acls {
		name, acl, err := devbroker.ParseACL(s)
		if err != nil {
			return fmt.Errorf("%s %w", src.describe("acl"), err)
		}
		i, ok := byName[name]
		if !ok || cfg.Users[i].Super {
			return fmt.Errorf("%s %q: %q is not a %s", src.describe("acl"), s, name, src.describe("user"))
		}
		cfg.Users[i].ACLs = append(cfg.Users[i].ACLs, acl)
	}
	cfg.SASL = cfg.SASL || len(cfg.Users) > 0
	cfg.ACLs = cfg.ACLs || len(acls) > 0
	return nil
}

func userNames(us []devbroker.User) []string {
	out := make([]string, len(us))
	for i, u := range us {
		out[i] = strings.ToLower(u.Mechanism) + ":" + u.Name
	}
	return out
}
