package node

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/routeguide-cluster/routeguide/internal/testutils/etcdtest"
)

// TestHTTPEndpointsAreSafeWhileTheNodeStarts asks /sd and /readyz as fast as
// it can while Run registers the node, so that the race detector sees any
// handler that reads what Run is still setting up.
func TestHTTPEndpointsAreSafeWhileTheNodeStarts(t *testing.T) {
	etcd := etcdtest.Start(t)
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.MetricsListen = "127.0.0.1:0"
	cfg.Etcd = []string{etcd.ClientURL()}
	cfg.DrainDelay = 0
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	asked := make(chan int, 1)
	go func() {
		count := 0
		defer func() { asked <- count }()
		for {
			select {
			case <-n.Ready():
				return
			default:
			}
			for _, path := range []string{"/sd", "/readyz"} {
				if resp, err := http.Get("http://" + n.MetricsAddr() + path); err == nil {
					resp.Body.Close()
					count++
				}
			}
		}
	}()
	go func() { done <- n.Run(ctx) }()
	select {
	case <-n.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("node not ready within 10s")
	}
	t.Logf("%d requests answered while the node started", <-asked)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
