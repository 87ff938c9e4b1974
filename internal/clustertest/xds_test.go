package clustertest

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/routeguide-cluster/routeguide/discovery/xdsserver"
	"github.com/routeguide-cluster/routeguide/internal/certgen"
	"github.com/routeguide-cluster/routeguide/internal/clientcli"
	"github.com/routeguide-cluster/routeguide/internal/devcluster"
	"github.com/routeguide-cluster/routeguide/internal/load"
	"github.com/routeguide-cluster/routeguide/internal/testutils/nodetest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
	"github.com/routeguide-cluster/routeguide/internal/testutils/testcerts"
	"github.com/routeguide-cluster/routeguide/internal/testutils/xdstest"
	"github.com/routeguide-cluster/routeguide/internal/tlsfiles"
)

// xdsTarget is what xDS clients dial.
const xdsTarget = "xds:///routeguide"

// xdsBootstrap is the dial option of an xds:/// client of cluster: a
// bootstrap that names every node there is now, the first one first, with
// the TLS of client (plaintext when it is empty).
func xdsBootstrap(tb testing.TB, cluster *devcluster.Cluster, client tlsfiles.Client) clientcli.DialOption {
	tb.Helper()
	cfg := xdsserver.BootstrapConfig{NodeID: tb.Name()}
	for _, n := range cluster.Nodes() {
		cfg.Servers = append(cfg.Servers, n.AdvertisedAddr())
	}
	if client.Enabled() {
		cfg.TLS = &xdsserver.BootstrapTLS{CAFile: client.CAFile, CertFile: client.CertFile, KeyFile: client.KeyFile}
	}
	return clientcli.WithGRPCOptions(grpc.WithResolvers(xdstest.Resolver(tb, cfg)))
}

// dialXDS connects to the cluster over xDS, as `client --target
// xds:///routeguide` does.
func dialXDS(t *testing.T, cluster *devcluster.Cluster) *clientcli.Conn {
	return dialXDSWithTLS(t, cluster, tlsfiles.Client{})
}

// dialXDSWithTLS is dialXDS with the TLS of client for the xDS channel and
// the calls both, as `client --tls-ca ...` with the bootstrap `client
// --tls-ca ... xds-bootstrap` prints.
func dialXDSWithTLS(t *testing.T, cluster *devcluster.Cluster, client tlsfiles.Client) *clientcli.Conn {
	t.Helper()
	opts := []clientcli.DialOption{xdsBootstrap(t, cluster, client)}
	if client.Enabled() {
		files, err := client.Open(tlsfiles.GRPCFlags, tlsfiles.Reload{})
		if err != nil {
			t.Fatal(err)
		}
		opts = append(opts, clientcli.WithTransportCredentials(files.Credentials()))
	}
	conn, err := clientcli.Dial(t.Context(), xdsTarget, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestXDSClientSpreadsCallsOverThreeNodes(t *testing.T) {
	testCallsSpread(t, dialXDS, 40)
}

// TestXDSClientDrainUnderLoadFailsNoCall is TestDrainUnderLoadFailsNoCall
// for a client that has the nodes from the xDS server of the first node:
// the drained node leaves the endpoints it is sent before it stops serving.
func TestXDSClientDrainUnderLoadFailsNoCall(t *testing.T) {
	for _, rpc := range []load.RPC{load.Get, load.Mix} {
		t.Run(string(rpc), func(t *testing.T) { testDrainUnderLoad(t, rpc, dialXDS) })
	}
}

// TestXDSClientTakesAJoinedNodeWithin250ms starts and drains 20 nodes under
// load from an xDS client, as BenchmarkJoinLatency does, and bounds the p99
// of the time from each node's key in etcd to its first answer.
func TestXDSClientTakesAJoinedNodeWithin250ms(t *testing.T) {
	template := nodetest.Config(t)
	cluster := nodetest.StartCluster(t, 2, template)
	conn := dialXDS(t, cluster)
	joins := 0
	delays := joinDelays(t, cluster, template, conn, func() bool { joins++; return joins <= 20 })
	p99 := percentile(delays, 99)
	t.Logf("%d joins: p50 %.1fms, p99 %.1fms", len(delays), percentile(delays, 50), p99)
	if p99 > 250 {
		t.Errorf("p99 %.1fms from a key in etcd to the node's first answer, want at most 250ms", p99)
	}
}

// TestXDSClientReachesTLSNodesOnlyWithTheirCredentials serves the nodes over TLS, and mutual
// TLS, and dials them with a bootstrap whose xDS channel takes the same
// credentials as the calls (`client --tls-ca ... xds-bootstrap` prints it):
// a client with the CA (and its certificate, for mutual TLS) reaches every
// node; one without is refused by the xDS server, so it learns of no node.
func TestXDSClientReachesTLSNodesOnlyWithTheirCredentials(t *testing.T) {
	certs := testcerts.New(t)
	// The xDS channel checks the server's IP; calls check the service name.
	nodeCert, nodeKey := certs.Issue(t, "node", certgen.Leaf{
		CommonName: "routeguide", DNSNames: []string{"routeguide"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true,
	})
	otherCA := testcerts.New(t).CA
	tests := []struct {
		name    string
		mutual  bool            // the nodes require a client certificate
		client  tlsfiles.Client // empty: plaintext
		refused bool
	}{
		{"TLS", false, tlsfiles.Client{CAFile: certs.CA}, false},
		{"mutual TLS", true, tlsfiles.Client{CAFile: certs.CA, CertFile: certs.ClientCert, KeyFile: certs.ClientKey}, false},
		{"TLS, client trusts another CA", false, tlsfiles.Client{CAFile: otherCA}, true},
		{"TLS, plaintext client", false, tlsfiles.Client{}, true},
		{"mutual TLS, client without a certificate", true, tlsfiles.Client{CAFile: certs.CA}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			template := nodetest.Config(t)
			template.TLS = tlsfiles.Server{CertFile: nodeCert, KeyFile: nodeKey}
			if tt.mutual {
				template.TLS.ClientCAFile = certs.CA
			}
			cluster := nodetest.StartCluster(t, 3, template)
			conn := dialXDSWithTLS(t, cluster, tt.client)
			if !tt.refused {
				waitAllAnswer(t, conn, ids(cluster.Nodes())...)
				return
			}
			// Every call fails; once the handshake has failed, the resolver's
			// error says that the xDS server refused the client.
			var err error
			poll.Until(t, 10*time.Second, "calls to fail naming the xDS stream", func() bool {
				ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
				defer cancel()
				var id string
				id, err = getFeature(ctx, conn)
				if code := status.Code(err); code != codes.Unavailable {
					t.Fatalf("GetFeature answered by %q: %v; want UNAVAILABLE", id, err)
				}
				return strings.Contains(err.Error(), "xDS stream")
			})
			t.Logf("refused: %v", err)
		})
	}
}
