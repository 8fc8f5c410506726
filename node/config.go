// Package node holds streamgate's gRPC services: publish streams, subscribe
// sessions and the per-subscription dispatcher. It speaks to the backend
// only through package broker.
package node

import (
	"fmt"
	"os"
)

// Config configures a node's services.
type Config struct {
	// NodeName is this node's name, reported to subscribers. Default: the
	// host name.
	NodeName string
	// PublishWindow is how many messages of one publish stream may await
	// their result before the node stops reading that stream. Default 1000.
	PublishWindow int
	// MaxBufferedBytes caps the bytes of all messages the node holds for
	// publishing, across streams; past it every stream waits. Default 64 MiB.
	MaxBufferedBytes int64
	// MaxMessageBytes is the largest message accepted (key, payload,
	// headers and topic). Default 1 MiB.
	MaxMessageBytes int
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	name, err := os.Hostname()
	if err != nil || name == "" {
		name = "streamgate"
	}
	return Config{
		NodeName:         name,
		PublishWindow:    1000,
		MaxBufferedBytes: 64 << 20,
		MaxMessageBytes:  1 << 20,
	}
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	switch {
	case c.NodeName == "":
		return fmt.Errorf("node: NodeName: must not be empty")
	case c.PublishWindow < 1:
		return fmt.Errorf("node: PublishWindow: must be at least 1, got %d", c.PublishWindow)
	case c.MaxMessageBytes < 1:
		return fmt.Errorf("node: MaxMessageBytes: must be at least 1, got %d", c.MaxMessageBytes)
	case c.MaxBufferedBytes < int64(c.MaxMessageBytes):
		return fmt.Errorf("node: MaxBufferedBytes: must be at least MaxMessageBytes (%d), got %d", c.MaxMessageBytes, c.MaxBufferedBytes)
	}
	return nil
}
