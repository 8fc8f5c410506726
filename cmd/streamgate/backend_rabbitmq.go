package main

import (
	"log/slog"
	"time"

	"github.com/streamgate/streamgate/broker/rabbitmq"
	"github.com/streamgate/streamgate/node"
)

// rabbitBackend is the RabbitMQ streams backend as serve uses it: the node
// talks to it through node.Backend; Close is deferred by the caller.
type rabbitBackend interface {
	node.Backend
	Close()
}

// newRabbitBackend connects to a RabbitMQ server with the stream plugin at
// addr (rabbitmq-stream://user:password@host:5552/vhost). maxMessageBytes
// and publishTimeout follow the node's settings (0: the backend's
// defaults). It fails when the server does not answer.
func newRabbitBackend(addr string, log *slog.Logger, maxMessageBytes int, publishTimeout time.Duration) (rabbitBackend, error) {
	cfg := rabbitmq.DefaultConfig(addr)
	cfg.Logger = log
	if maxMessageBytes > 0 {
		cfg.MaxMessageBytes = maxMessageBytes
	}
	if publishTimeout > 0 {
		cfg.PublishTimeout = publishTimeout
	}
	return rabbitmq.New(cfg)
}
