package cluster

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		field  string // "" means valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"free port", func(c *Config) { c.BindPort = 0 }, ""},
		{"seeds and key", func(c *Config) { c.Join = []string{"a:7946", "b"}; c.SecretKey = make([]byte, 32) }, ""},
		{"no name", func(c *Config) { c.NodeName = " " }, "NodeName"},
		{"bind host name", func(c *Config) { c.BindAddr = "localhost" }, "BindAddr"},
		{"bind port", func(c *Config) { c.BindPort = 70000 }, "BindPort"},
		{"advertise port", func(c *Config) { c.AdvertisePort = -1 }, "AdvertisePort"},
		{"join retry", func(c *Config) { c.JoinRetryInterval = 0 }, "JoinRetryInterval"},
		{"rejoin", func(c *Config) { c.RejoinInterval = -time.Second }, "RejoinInterval"},
		{"key size", func(c *Config) { c.SecretKey = make([]byte, 20) }, "SecretKey"},
		{"grpc addr", func(c *Config) { c.GRPCAddr = string(make([]byte, 300)) }, "GRPCAddr"},
		{"probe interval", func(c *Config) { c.ProbeInterval = 0 }, "ProbeInterval"},
		{"probe timeout", func(c *Config) { c.ProbeTimeout = c.ProbeInterval }, "ProbeTimeout"},
		{"suspicion", func(c *Config) { c.SuspicionMult = 0 }, "SuspicionMult"},
		{"suspicion max", func(c *Config) { c.SuspicionMaxTimeoutMult = 0 }, "SuspicionMaxTimeoutMult"},
		{"gossip", func(c *Config) { c.GossipInterval = 0 }, "GossipInterval"},
		{"push pull", func(c *Config) { c.PushPullInterval = 0 }, "PushPullInterval"},
		{"tcp", func(c *Config) { c.TCPTimeout = 0 }, "TCPTimeout"},
		{"empty seed", func(c *Config) { c.Join = []string{"a", ""} }, "Join[1]"},
		{"comma seed", func(c *Config) { c.Join = []string{"a,b"} }, "Join[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.NodeName = "n1"
			tt.change(&cfg)
			err := cfg.Validate()
			if tt.field == "" {
				require.NoError(t, err)
				return
			}
			var ce *ConfigError
			require.True(t, errors.As(err, &ce), "want a *ConfigError, got %v", err)
			require.Equal(t, tt.field, ce.Field, err.Error())
		})
	}
}

func TestStartRejectsInvalidConfig(t *testing.T) {
	cfg := DefaultConfig()
	cfg.NodeName = ""
	_, err := Start(cfg)
	var ce *ConfigError
	require.ErrorAs(t, err, &ce)
}
