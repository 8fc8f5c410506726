package rabbitmqtest

import (
	"net"
	"strconv"
	"testing"
	"time"
)

func TestMain(m *testing.M) { Main(m) }

func TestStartRestartStop(t *testing.T) {
	s := Require(t)
	dial := func() error {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(s.StreamPort()), time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(); err != nil {
		t.Fatalf("stream port: %v", err)
	}
	s.Kill()
	if err := dial(); err == nil {
		t.Fatal("stream port still answers after Kill")
	}
	if err := s.StartAgain(); err != nil {
		t.Fatal(err)
	}
	if err := dial(); err != nil {
		t.Fatalf("stream port after restart: %v", err)
	}
}
