package clustertest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/routeguide-cluster/routeguide/internal/load"
	"github.com/routeguide-cluster/routeguide/internal/testutils/nodetest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
)

// TestClientCommandToursAndStopsOnSIGINTWithItsSummary runs the client
// command as it ships, as the README does against `node -dev`: a tour exits
// 0, and a load that SIGINT stops, as Ctrl-C does, prints the summary of the
// calls that finished, none failed and both nodes among them, and exits 0.
// The signal is the command's own wiring (cmd/client), which clientcli's
// tests cannot reach.
func TestClientCommandToursAndStopsOnSIGINTWithItsSummary(t *testing.T) {
	var calls atomic.Int64
	template := nodetest.Config(t)
	template.ServerOptions = []grpc.ServerOption{grpc.ChainUnaryInterceptor(
		func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			calls.Add(1)
			return handler(ctx, req)
		})}
	cluster := nodetest.StartCluster(t, 2, template)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	client := func(args ...string) *exec.Cmd {
		cmd := exec.CommandContext(ctx, commands.Client, append([]string{"--etcd", cluster.EtcdURL()}, args...)...)
		cmd.Env = environ()
		return cmd
	}

	if out, err := client("tour").CombinedOutput(); err != nil {
		t.Fatalf("client tour: %v\n%s", err, out)
	}

	const workers = 4
	run := client("--json", "load", "--concurrency", fmt.Sprint(workers), "--duration", "1h")
	var stdout, stderr bytes.Buffer
	run.Stdout, run.Stderr = &stdout, &stderr
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	before := calls.Load()
	// The nodes count a call as it starts: with each worker's call in
	// flight, 100 have finished once 100+workers have started.
	poll.Until(t, 30*time.Second, "100 calls of the load", func() bool { return calls.Load()-before >= 100+workers })
	if err := run.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := run.Wait(); err != nil {
		t.Fatalf("client load after SIGINT: %v, want exit 0; stderr:\n%s", err, &stderr)
	}
	var res load.Result
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("summary %q: %v", &stdout, err)
	}
	if res.OK < 100 || res.Failed != 0 || len(res.ByNode) != 2 {
		t.Errorf("summary ok=%d failed=%d by_node=%v; want at least 100 calls, none failed, from both nodes", res.OK, res.Failed, res.ByNode)
	}
	if !strings.Contains(stderr.String(), "interrupted") {
		t.Errorf("stderr %q does not say the run was interrupted", &stderr)
	}
}
