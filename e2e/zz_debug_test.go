package e2e

import (
	"net/http"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"
)

func TestZZDebug(t *testing.T) {
	nw := newNetwork(t)
	startBroker(t, nw, "t", 4)
	gw := run(t, "gw", testcontainers.WithCmd("serve", "--brokers", "broker:9092", "--node-name", "n1"),
		testcontainers.WithExposedPorts(grpcPort, httpPort),
		network.WithNetwork([]string{"n1"}, nw),
		testcontainers.WithWaitStrategy(wait.ForLog("streamgate serving")))
	ep, err := gw.PortEndpoint(t.Context(), httpPort, "http")
	t.Log(ep, err)
	cl := http.Client{Timeout: time.Second}
	for i := 0; i < 10; i++ {
		resp, err := cl.Get(ep + "/readyz")
		if err != nil {
			t.Log(time.Now(), err)
		} else {
			t.Log(time.Now(), resp.Status)
			resp.Body.Close()
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fail()
}
