package benchpeers_test

import (
	"context"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/routeguide-cluster/routeguide/internal/load"
	"github.com/routeguide-cluster/routeguide/internal/testutils/etcdtest"
)

// TestPeersServe is the short run CI makes so that the benchmark cannot
// rot: each framework's three nodes register, its client connects to all
// of them, and a few hundred calls succeed.
func TestPeersServe(t *testing.T) {
	etcd := etcdtest.Start(t)
	kv := etcdtest.Client(t, etcd.ClientURL())
	for _, fw := range frameworks {
		t.Run(fw.name, func(t *testing.T) {
			c := startCluster(t, fw, etcd, kv)
			res, err := load.Run(context.Background(), c.conn, load.Config{RPC: load.Get, Concurrency: 4, Requests: 300, Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if res.OK != 300 || res.Failed != 0 {
				t.Errorf("ok=%d failed=%d (%v), want 300 calls answered", res.OK, res.Failed, res.Errors)
			}
		})
	}
}

// The modules both go.mod files require at different versions, and why
// that leaves our code measured with the main module's versions.
var allowedSkew = map[string]string{
	// Both raised by go-zero's Kubernetes client; of our code, only the
	// embedded etcd server of the test process uses them.
	"k8s.io/utils":                 "go-zero's; besides, only the test's etcd server uses it (a btree)",
	"github.com/gorilla/websocket": "go-zero's; besides, only the test's etcd server uses it (its websocket proxy)",
}

// TestSharedModulesAtTheMainModulesVersions guards what the figures mean:
// go-zero must not move a module our node or client is built from (gRPC,
// etcd's client, protobuf...) away from the main module's version.
func TestSharedModulesAtTheMainModulesVersions(t *testing.T) {
	main, ours := requirements(t, "../../go.mod"), requirements(t, "go.mod")
	for mod, v := range main {
		if w, ok := ours[mod]; ok && w != v {
			if why, ok := allowedSkew[mod]; ok {
				t.Logf("%s: %s here, %s in the main module (%s)", mod, w, v, why)
				continue
			}
			t.Errorf("%s: %s here, %s in the main module; align them or say why in allowedSkew", mod, w, v)
		}
	}
}

var requireLine = regexp.MustCompile(`(?m)^\s*(?:require\s+)?(\S+) (v\S+)(?: // indirect)?$`)

func requirements(t *testing.T, file string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	reqs := map[string]string{}
	for _, m := range requireLine.FindAllStringSubmatch(string(data), -1) {
		reqs[m[1]] = m[2]
	}
	if len(reqs) == 0 {
		t.Fatalf("no requirement read from %s", file)
	}
	return reqs
}
