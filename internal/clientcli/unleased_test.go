package clientcli

import (
	"context"
	"testing"
	"time"

	"github.com/routeguide-cluster/routeguide/discovery"
	"github.com/routeguide-cluster/routeguide/internal/testutils/etcdtest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/nodetest"
)

// TestUnleasedEntriesFlagResolvesEndpointsWrittenByHand: a node written into
// the registry by hand, without a lease, is skipped by default (no node, so
// the call fails UNAVAILABLE) and called with --unleased-entries, or its
// environment variable.
func TestUnleasedEntriesFlagResolvesEndpointsWrittenByHand(t *testing.T) {
	etcd := etcdtest.Start(t)
	cli := etcdtest.Client(t, etcd.ClientURL())
	value, err := discovery.EncodeEndpoint(nodetest.Start(t, "by-hand").Addr().String(), discovery.Metadata{NodeID: "by-hand"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, discovery.Prefix("routeguide")+"by-hand", value); err != nil {
		t.Fatal(err)
	}
	get := append([]string{"--etcd", etcd.ClientURL(), "--timeout", "5s"}, "get", "40.9", "-74.3")
	for _, tc := range []struct {
		name     string
		args     []string
		env      map[string]string
		wantCode int
	}{
		{"default", get, nil, 1},
		{"flag", append([]string{"--unleased-entries"}, get...), nil, 0},
		{"environment", get, map[string]string{"ROUTEGUIDE_UNLEASED_ENTRIES": "true"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := run(t, invocation{args: tc.args, env: tc.env})
			if out.code != tc.wantCode {
				t.Errorf("exit %d, want %d; stdout %q, stderr %q", out.code, tc.wantCode, out.stdout, out.stderr)
			}
		})
	}
}
