// Package etcdtest starts real etcd servers inside the test process: one
// member (package localetcd), plain or secured as a production cluster runs
// it (TLS, authentication, the users a test names), or, for fault tests, a
// cluster of several members that loses one as abruptly as a crash does.
// A Watch records when keys changed. localetcd itself is linked into the
// node binary (node -dev) and so does not import testing.
package etcdtest

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/routeguide-cluster/routeguide/internal/localetcd"
	"github.com/routeguide-cluster/routeguide/internal/testutils/testcerts"
	"github.com/routeguide-cluster/routeguide/internal/tlsfiles"
)

// RootPassword is the password of the user root, which EnableAuth creates.
const RootPassword = "root-pw"

// BcryptCost is bcrypt.MinCost, for the etcd servers of tests. etcd checks a password's hash at every
// authentication; at its default cost of 10 each check takes seconds under
// the race detector, and a node's first token could miss its 10s bound on a
// loaded machine. The check is the same at any cost.
const BcryptCost = 4

// Options say how the server checks its clients.
type Options struct {
	// ClientCerts makes every client present a certificate signed by the
	// test CA (etcd's --client-cert-auth).
	ClientCerts bool
}

// StartSecured starts etcd over TLS with the certificates of certs, turns
// authentication on with users, and stops it when tb ends. It returns the
// server and the TLS a client needs to reach it: the test CA, and the
// client certificate of certs when opts.ClientCerts is set.
func StartSecured(tb testing.TB, certs testcerts.Files, opts Options, users ...localetcd.User) (*localetcd.Server, *tls.Config) {
	tb.Helper()
	serverTLS := localetcd.ClientTLS{CertFile: certs.ServerCert, KeyFile: certs.ServerKey}
	clientTLS := tlsfiles.Client{CAFile: certs.CA}
	if opts.ClientCerts {
		serverTLS.CAFile = certs.CA
		clientTLS.CertFile, clientTLS.KeyFile = certs.ClientCert, certs.ClientKey
	}
	s, err := localetcd.Start(localetcd.Config{Dir: tb.TempDir(), ClientTLS: serverTLS, BcryptCost: BcryptCost})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Close)
	tlsCfg, err := clientTLS.Config(tlsfiles.EtcdFlags)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.EnableAuth(ctx, tlsCfg, RootPassword, users...); err != nil {
		tb.Fatal(err)
	}
	return s, tlsCfg
}

// Get reads key from the plain (http) etcd at url with a client of its own,
// so that a test can ask one member in particular; "" when key is not set.
func Get(tb testing.TB, url, key string) string {
	tb.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 5 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, key)
	if err != nil {
		tb.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return ""
	}
	return string(resp.Kvs[0].Value)
}

// Start starts a plain etcd, without TLS or authentication, on a free
// loopback port, and stops it when tb ends.
func Start(tb testing.TB) *localetcd.Server {
	tb.Helper()
	srv, err := localetcd.Start(localetcd.Config{Dir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(srv.Close)
	return srv
}

// Client is a client of the plain etcd at url, dialled with opts (a test's
// interceptors), closed when tb ends.
func Client(tb testing.TB, url string, opts ...grpc.DialOption) *clientv3.Client {
	tb.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 5 * time.Second, DialOptions: opts})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cli.Close() })
	return cli
}

// Restartable is a plain etcd that a test stops (Close) to make an outage,
// and starts again on the same data and port (Restart) to end it.
type Restartable struct {
	*localetcd.Server
	tb   testing.TB
	dir  string
	addr string // the client address, kept across restarts
}

// StartRestartable starts a plain etcd, as Start does, that Restart can
// start again after Close.
func StartRestartable(tb testing.TB) *Restartable {
	tb.Helper()
	r := &Restartable{tb: tb, dir: tb.TempDir()}
	r.start()
	r.addr = r.ClientAddr()
	return r
}

// Restart starts the server again after Close, on the same data directory
// and client address, and stops it when the test ends.
func (r *Restartable) Restart() {
	r.tb.Helper()
	r.start()
}

func (r *Restartable) start() {
	r.tb.Helper()
	srv, err := localetcd.Start(localetcd.Config{Dir: r.dir, ClientAddr: r.addr})
	if err != nil {
		r.tb.Fatal(err)
	}
	r.tb.Cleanup(srv.Close)
	r.Server = srv
}
