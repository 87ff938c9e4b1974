package localetcd_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/routeguide-cluster/routeguide/internal/localetcd"
	"github.com/routeguide-cluster/routeguide/internal/testutils/etcdtest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
	"github.com/routeguide-cluster/routeguide/internal/testutils/testcerts"
	"github.com/routeguide-cluster/routeguide/internal/tlsfiles"
)

func TestStartServesClientsAndKeepsDataAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	s, err := localetcd.Start(localetcd.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	addr := s.ClientAddr()
	put(t, s.ClientURL(), "k", "v")
	s.Close()
	s, err = localetcd.Start(localetcd.Config{Dir: dir, ClientAddr: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := etcdtest.Get(t, s.ClientURL(), "k"); got != "v" {
		t.Errorf("after a restart, k = %q, want v", got)
	}
}

func TestStartWithoutDirKeepsDataInATempDirRemovedAtClose(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	s, err := localetcd.Start(localetcd.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	put(t, s.ClientURL(), "k", "v")
	if entries, _ := os.ReadDir(tmp); len(entries) != 1 {
		t.Fatalf("%d entries in the temp dir while etcd runs, want its data directory", len(entries))
	}
	s.Close()
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Errorf("%d entries left in the temp dir after Close, want none", len(entries))
	}
}

func put(t *testing.T, url, k, v string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := etcdtest.Client(t, url).Put(ctx, k, v); err != nil {
		t.Fatal(err)
	}
}

func TestClientTLSAndAuth(t *testing.T) {
	certs := testcerts.New(t)
	s, err := localetcd.Start(localetcd.Config{Dir: t.TempDir(), ClientTLS: localetcd.ClientTLS{CertFile: certs.ServerCert, KeyFile: certs.ServerKey, CAFile: certs.CA}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !strings.HasPrefix(s.ClientURL(), "https://") {
		t.Fatalf("ClientURL = %s, want https", s.ClientURL())
	}
	clientTLS, err := tlsfiles.Client{CAFile: certs.CA, CertFile: certs.ClientCert, KeyFile: certs.ClientKey}.Config(tlsfiles.EtcdFlags)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := s.EnableAuth(ctx, clientTLS, "rootpw", localetcd.User{Name: "app", Password: "apppw", Prefixes: []string{"app/"}}); err != nil {
		t.Fatal(err)
	}
	connect := func(user, password string) (*clientv3.Client, error) {
		return clientv3.New(clientv3.Config{Endpoints: []string{s.ClientURL()}, TLS: clientTLS, Username: user, Password: password, DialTimeout: 10 * time.Second})
	}
	app, err := connect("app", "apppw")
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	if _, err := app.Put(ctx, "app/k", "v"); err != nil {
		t.Errorf("app writes under its prefix: %v", err)
	}
	if _, err := app.Put(ctx, "other/k", "v"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Errorf("app writes outside its prefix: err = %v, want permission denied", err)
	}
	if cli, err := connect("app", "wrong"); !errors.Is(err, rpctypes.ErrAuthFailed) {
		if cli != nil {
			cli.Close()
		}
		t.Errorf("wrong password: err = %v, want authentication failed", err)
	}
	// Without a client certificate the handshake fails, so the call never
	// reaches etcd and waits for its deadline.
	noCert, err := tlsfiles.Client{CAFile: certs.CA}.Config(tlsfiles.EtcdFlags)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{s.ClientURL()}, TLS: noCert})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	shortCtx, cancelShort := context.WithTimeout(ctx, time.Second)
	defer cancelShort()
	if _, err := cli.Get(shortCtx, "app/k"); err == nil {
		t.Error("a client without certificate read from etcd")
	}
}

// TestEtcdCompactsItsHistory: the dev cluster's etcd drops old revisions by
// itself, so that what deleted and expired notes held is freed.
func TestEtcdCompactsItsHistory(t *testing.T) {
	s, err := localetcd.Start(localetcd.Config{Dir: t.TempDir(), History: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cli := etcdtest.Client(t, s.ClientURL())
	first, err := cli.Put(t.Context(), "k", "old")
	if err != nil {
		t.Fatal(err)
	}
	poll.UntilReported(t, 30*time.Second, 100*time.Millisecond, "etcd to compact the first revision", func() (bool, string) {
		// A write keeps the revision moving, as a node's keepalives do.
		if _, err := cli.Put(t.Context(), "k", "new"); err != nil {
			t.Fatal(err)
		}
		_, err := cli.Get(t.Context(), "k", clientv3.WithRev(first.Header.Revision))
		if err != nil && !errors.Is(err, rpctypes.ErrCompacted) {
			t.Fatal(err)
		}
		return errors.Is(err, rpctypes.ErrCompacted), fmt.Sprintf("revision %d readable", first.Header.Revision)
	})
}
