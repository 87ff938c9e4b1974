package node

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/routeguide-cluster/routeguide/discovery"
	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/etcdauth"
	"github.com/routeguide-cluster/routeguide/internal/localetcd"
	"github.com/routeguide-cluster/routeguide/internal/testutils/etcdtest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/grpctest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/testcerts"
	"github.com/routeguide-cluster/routeguide/internal/tlsfiles"
	"github.com/routeguide-cluster/routeguide/routeguide/contract"
)

func TestValidateNamesTheSecurityFlagAtFault(t *testing.T) {
	tests := []validateCase{
		{"TLS", func(c *Config) { c.TLS = tlsfiles.Server{CertFile: "/c", KeyFile: "/k"} }, ""},
		{"mutual TLS", func(c *Config) { c.TLS = tlsfiles.Server{CertFile: "/c", KeyFile: "/k", ClientCAFile: "/ca"} }, ""},
		{"cert without key", func(c *Config) { c.TLS.CertFile = "/c" }, "--tls-cert"},
		{"key without cert", func(c *Config) { c.TLS.KeyFile = "/k" }, "--tls-key"},
		{"client CA without cert", func(c *Config) { c.TLS.ClientCAFile = "/ca" }, "--tls-client-ca"},
		{"etcd cert without key", func(c *Config) { c.EtcdAuth.TLS.CertFile = "/c" }, "--etcd-cert"},
		{"etcd user without password", func(c *Config) { c.EtcdAuth.Username = "node" }, "--etcd-username"},
		{"etcd user and password", func(c *Config) { c.EtcdAuth.Username, c.EtcdAuth.Password = "node", "pw" }, ""},
	}
	checkValidate(t, tests)
}

func TestBadTLSFileFailsNewNamingTheFlag(t *testing.T) {
	certs := testcerts.New(t)
	cfg := DefaultConfig()
	cfg.Listen, cfg.Etcd, cfg.MetricsListen = "127.0.0.1:0", nil, ""
	cfg.TLS = tlsfiles.Server{CertFile: certs.ServerCert, KeyFile: certs.ServerKey, ClientCAFile: certs.ServerKey}
	if n, err := New(cfg); err == nil {
		n.listener.Close()
		t.Fatal("New accepted a key file as the client CA")
	} else if want := "--tls-client-ca: " + certs.ServerKey + " holds no PEM certificate"; err.Error() != want {
		t.Errorf("New: %v, want %q", err, want)
	}
}

// mutualTLSNode runs a standalone node that requires client certificates
// signed by the CA of certs.
func mutualTLSNode(t *testing.T, certs testcerts.Files) *testNode {
	t.Helper()
	return startNode(t, func(c *Config) {
		c.TLS = tlsfiles.Server{CertFile: certs.ServerCert, KeyFile: certs.ServerKey, ClientCAFile: certs.CA}
	}, nil)
}

// dialTLS connects to addr with the TLS that client's files make.
func dialTLS(t *testing.T, addr string, client tlsfiles.Client) *grpc.ClientConn {
	t.Helper()
	cfg, err := client.Config(tlsfiles.GRPCFlags)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestMutualTLSServesRouteGuideHealthAndReflection(t *testing.T) {
	certs := testcerts.New(t)
	tn := mutualTLSNode(t, certs)
	if recs := tn.logs.records(t, "serving"); len(recs) != 1 || recs[0]["tls"] != "mutual" {
		t.Errorf(`"serving" records %v, want one with tls=mutual`, recs)
	}
	conn := dialTLS(t, tn.Addr().String(), tlsfiles.Client{CAFile: certs.CA, CertFile: certs.ClientCert, KeyFile: certs.ClientKey})
	ctx := grpctest.CallContext(t)

	feature, err := pb.NewRouteGuideClient(conn).GetFeature(ctx, knownPoint(t))
	if err != nil || feature.GetName() == "" {
		t.Errorf("GetFeature over mutual TLS: %v, %v", feature, err)
	}
	for _, service := range []string{"", contract.HealthService} {
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health of %q over mutual TLS: %v, %v; want SERVING", service, resp, err)
		}
	}
	checkReflectionLists(t, conn)
}

// TestTLSRefusesClients asserts that every client that cannot prove itself,
// or does not trust the node, gets Unavailable, and no answer.
func TestTLSRefusesClients(t *testing.T) {
	certs := testcerts.New(t)
	stranger := testcerts.New(t) // another CA, that the node does not trust
	tn := mutualTLSNode(t, certs)
	tests := []struct {
		name   string
		client tlsfiles.Client // zero: plaintext
		want   string          // in the status message
	}{
		{"plaintext", tlsfiles.Client{}, ""},
		// The node refuses these two after the client has finished its side
		// of a TLS 1.3 handshake: the client sees the node's alert, or the
		// connection closed under it, whichever comes first.
		{"no client certificate", tlsfiles.Client{CAFile: certs.CA}, ""},
		{"client certificate of another CA", tlsfiles.Client{CAFile: certs.CA, CertFile: stranger.ClientCert, KeyFile: stranger.ClientKey}, ""},
		{"client that does not trust the node's CA", tlsfiles.Client{CAFile: stranger.CA, CertFile: certs.ClientCert, KeyFile: certs.ClientKey}, "certificate signed by unknown authority"},
		{"server name the certificate lacks", tlsfiles.Client{CAFile: certs.CA, CertFile: certs.ClientCert, KeyFile: certs.ClientKey, ServerName: "node.routeguide"}, "node.routeguide"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var conn *grpc.ClientConn
			if tt.client.Enabled() {
				conn = dialTLS(t, tn.Addr().String(), tt.client)
			} else {
				conn = dial(t, tn.Addr().String())
				t.Cleanup(func() { conn.Close() })
			}
			_, err := healthpb.NewHealthClient(conn).Check(grpctest.CallContext(t), &healthpb.HealthCheckRequest{})
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("health Check: %v; want Unavailable", err)
			}
			if !strings.Contains(strings.ToLower(status.Convert(err).Message()), tt.want) {
				t.Errorf("health Check: %v; want the message to mention %q", err, tt.want)
			}
		})
	}
}

// securedEtcd is an etcd that serves clients over TLS only to holders of a
// client certificate, with authentication on: users "node" and the client
// certificate's name may read and write under routeguide/, "other" only
// under other/.
type securedEtcd struct {
	*localetcd.Server
	certs testcerts.Files
}

const nodePassword = "n0de-Passw0rd"

func startSecuredEtcd(t *testing.T) securedEtcd {
	t.Helper()
	certs := testcerts.New(t)
	s, _ := etcdtest.StartSecured(t, certs, etcdtest.Options{ClientCerts: true},
		localetcd.User{Name: "node", Password: nodePassword, Prefixes: []string{"routeguide/", "routeguide-notes/"}},
		localetcd.User{Name: "other", Password: "other-pw", Prefixes: []string{"other/"}},
		localetcd.User{Name: "registry-only", Password: "registry-pw", Prefixes: []string{"routeguide/"}},
		localetcd.User{Name: testcerts.ClientName, Password: "unused-pw", Prefixes: []string{"routeguide/", "routeguide-notes/"}},
	)
	return securedEtcd{Server: s, certs: certs}
}

func clientTLS(t *testing.T, certs testcerts.Files) *tls.Config {
	t.Helper()
	cfg, err := tlsfiles.Client{CAFile: certs.CA, CertFile: certs.ClientCert, KeyFile: certs.ClientKey}.Config(tlsfiles.EtcdFlags)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// auth is the node's etcd configuration for user and password.
func (e securedEtcd) auth(user, password string) etcdauth.Config {
	return etcdauth.Config{
		TLS:      tlsfiles.Client{CAFile: e.certs.CA, CertFile: e.certs.ClientCert, KeyFile: e.certs.ClientKey},
		Username: user,
		Password: etcdauth.Password(password),
	}
}

func TestNodeWithEtcdCredentialsRegistersAndNeverShowsThePassword(t *testing.T) {
	etcd := startSecuredEtcd(t)
	tn := startNode(t, func(c *Config) {
		c.Etcd = []string{etcd.ClientURL()}
		c.EtcdAuth = etcd.auth("node", nodePassword)
		c.MetricsListen = "127.0.0.1:0"
	}, nil)
	if !tn.Registered() {
		t.Error("the node is ready but not registered")
	}
	root, err := discovery.NewEtcdClient(discovery.EtcdConfig{Endpoints: []string{etcd.ClientURL()}, TLS: clientTLS(t, etcd.certs), Username: "root", Password: etcdtest.RootPassword})
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	resp, err := root.Get(grpctest.CallContext(t), discovery.Prefix("routeguide")+testNodeID)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("the node's key in etcd: %v, %v", resp, err)
	}
	_, metrics := get(t, tn.MetricsAddr(), "/metrics")
	if err := tn.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	logs := tn.logs.String()
	for what, text := range map[string]string{"logs": logs, "metrics": metrics} {
		if strings.Contains(text, nodePassword) {
			t.Errorf("the etcd password shows in the node's %s", what)
		}
	}
	if !strings.Contains(logs, `"msg":"registered"`) || !strings.Contains(logs, `"msg":"deregistered"`) {
		t.Errorf("the logs lack the registration and the drain:\n%s", logs)
	}
}

func TestNodeWithWrongEtcdPasswordFailsAtOnce(t *testing.T) {
	etcd := startSecuredEtcd(t)
	cfg := DefaultConfig()
	cfg.Listen, cfg.MetricsListen, cfg.Etcd = "127.0.0.1:0", "", []string{etcd.ClientURL()}
	cfg.EtcdAuth = etcd.auth("node", "not-"+nodePassword)
	n, err := New(cfg)
	if err == nil {
		n.listener.Close()
		t.Fatal("New accepted a wrong etcd password")
	}
	if !strings.Contains(err.Error(), "authentication failed: wrong username or password") {
		t.Errorf("New: %v; want it to say authentication failed", err)
	}
	if strings.Contains(err.Error(), nodePassword) {
		t.Errorf("New: %v shows the password", err)
	}
}

// TestNodeWithoutPermissionStopsAtFirstRegistration: a user that etcd
// authenticates but that may not write the node's key must stop the node,
// not leave it retrying forever.
func TestNodeWithoutPermissionStopsAtFirstRegistration(t *testing.T) {
	etcd := startSecuredEtcd(t)
	for _, tt := range []struct{ user, password, names string }{
		{"other", "other-pw", "routeguide/"},
		// The registry alone is not enough: RouteChat's notes live beside it.
		{"registry-only", "registry-pw", NotesPrefix("routeguide")},
	} {
		t.Run(tt.user, func(t *testing.T) {
			tn := newTestNode(t, func(c *Config) {
				c.Etcd = []string{etcd.ClientURL()}
				c.EtcdAuth = etcd.auth(tt.user, tt.password)
			}, nil)
			err := runUntilItStops(t, tn)
			if err == nil || !strings.Contains(err.Error(), "register in etcd:") || !strings.Contains(err.Error(), "permission denied") || !strings.Contains(err.Error(), tt.names) {
				t.Errorf("Run: %v; want register in etcd: ... %s ... permission denied", err, tt.names)
			}
			if !discovery.IsAuthError(err) {
				t.Errorf("IsAuthError(%v) = false", err)
			}
			select {
			case <-tn.Ready():
				t.Error("the node said it was ready")
			default:
			}
		})
	}
}

// TestNodeAuthenticatedByItsCertificateRegisters: with client certificates
// required, etcd takes a client that sends no password for the user its
// certificate names, so a node needs no password at all.
func TestNodeAuthenticatedByItsCertificateRegisters(t *testing.T) {
	etcd := startSecuredEtcd(t)
	tn := startNode(t, func(c *Config) {
		c.Etcd = []string{etcd.ClientURL()}
		c.EtcdAuth = etcd.auth("", "")
	}, nil)
	if !tn.Registered() {
		t.Error("the node is ready but not registered")
	}
}

// runUntilItStops runs a node that must stop by itself, and returns what Run
// returned. The test's cleanup then finds the node stopped.
func runUntilItStops(t *testing.T, tn *testNode) error {
	t.Helper()
	tn.start()
	select {
	case <-tn.done:
	case <-time.After(20 * time.Second):
		t.Fatal("Run still runs 20s after it started; want it stopped by etcd's refusal")
	}
	err := tn.runErr
	tn.runErr = nil // seen here; the cleanup must not report it again
	return err
}
