package clientcli

import (
	"strings"
	"testing"

	"github.com/routeguide-cluster/routeguide/internal/certgen"
	"github.com/routeguide-cluster/routeguide/internal/etcdauth"
	"github.com/routeguide-cluster/routeguide/internal/localetcd"
	"github.com/routeguide-cluster/routeguide/internal/node"
	"github.com/routeguide-cluster/routeguide/internal/testutils/etcdtest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/nodetest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/testcerts"
	"github.com/routeguide-cluster/routeguide/internal/tlsfiles"
)

// nodeName is the only name on the certificate of the nodes in the
// etcd:/// test: no IP, as in a cluster whose nodes' IPs are not known
// when their certificate is made.
const nodeName = "node.routeguide"

// startMutualTLSNode runs a standalone node that requires a client
// certificate from the CA of certs, and returns its address.
func startMutualTLSNode(t *testing.T, certs testcerts.Files) string {
	t.Helper()
	return nodetest.Start(t, "n1", func(c *node.Config) {
		c.TLS = tlsfiles.Server{CertFile: certs.ServerCert, KeyFile: certs.ServerKey, ClientCAFile: certs.CA}
	}).Addr().String()
}

func TestMutualTLS(t *testing.T) {
	certs := testcerts.New(t)
	stranger := testcerts.New(t)
	addr := startMutualTLSNode(t, certs)
	mutual := []string{"--tls-ca", certs.CA, "--tls-cert", certs.ClientCert, "--tls-key", certs.ClientKey}
	tests := []struct {
		name  string
		flags []string
		env   map[string]string
		code  int
		want  string // in stdout for 0, in stderr otherwise
	}{
		{"client certificate", mutual, nil, ExitOK, "[node n1]"},
		{"from the environment", nil, map[string]string{"ROUTEGUIDE_TLS_CA": certs.CA, "ROUTEGUIDE_TLS_CERT": certs.ClientCert, "ROUTEGUIDE_TLS_KEY": certs.ClientKey}, ExitOK, "[node n1]"},
		{"by name", append([]string{"--tls-server-name", "localhost"}, mutual...), nil, ExitOK, "[node n1]"},
		{"plaintext", nil, nil, ExitFailed, "Unavailable"},
		{"no client certificate", []string{"--tls-ca", certs.CA}, nil, ExitFailed, "Unavailable"},
		{"certificate of another CA", []string{"--tls-ca", certs.CA, "--tls-cert", stranger.ClientCert, "--tls-key", stranger.ClientKey}, nil, ExitFailed, "Unavailable"},
		{"node not trusted", []string{"--tls-ca", stranger.CA, "--tls-cert", certs.ClientCert, "--tls-key", certs.ClientKey}, nil, ExitFailed, "certificate signed by unknown authority"},
		{"certificate without key", []string{"--tls-ca", certs.CA, "--tls-cert", certs.ClientCert}, nil, ExitUsage, "client: --tls-cert: set without --tls-key"},
		{"CA file that is a key", []string{"--tls-ca", certs.ClientKey}, nil, ExitUsage, "client get: --tls-ca: " + certs.ClientKey + " holds no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			flags := append(append([]string{"--target", addr, "--timeout", "5s"}, tt.flags...), "get", "40.9", "-74.3")
			out := run(t, invocation{args: flags, env: tt.env})
			wantOutcome(t, out, tt.code, tt.want)
		})
	}
}

// TestEtcdTargetOverTLSWithEtcdAuth is the secured cluster end to end: etcd
// over TLS with authentication, a node registered with its user, and a
// client that resolves etcd:/// with its own user, then dials the node's IP
// over mutual TLS, checking the name on the node's certificate.
func TestEtcdTargetOverTLSWithEtcdAuth(t *testing.T) {
	certs := testcerts.New(t)
	etcd, _ := etcdtest.StartSecured(t, certs, etcdtest.Options{},
		localetcd.User{Name: "node", Password: "node-pw", Prefixes: []string{"routeguide/", "routeguide-notes/"}},
		localetcd.User{Name: "client", Password: "client-pw", Prefixes: []string{"routeguide/"}})
	nodeCert, nodeKey := certs.Issue(t, "node", certgen.Leaf{CommonName: nodeName, DNSNames: []string{nodeName}, Server: true})
	nodetest.Start(t, "n1", func(c *node.Config) {
		c.Etcd = []string{etcd.ClientURL()}
		c.Advertise = "" // the IP in --listen, 127.0.0.1
		c.EtcdAuth = etcdauth.Config{TLS: tlsfiles.Client{CAFile: certs.CA}, Username: "node", Password: "node-pw"}
		c.TLS = tlsfiles.Server{CertFile: nodeCert, KeyFile: nodeKey, ClientCAFile: certs.CA}
	})

	flags := []string{"--target", "etcd:///routeguide", "--etcd", etcd.ClientURL(), "--etcd-ca", certs.CA, "--etcd-username", "client",
		"--tls-ca", certs.CA, "--tls-cert", certs.ClientCert, "--tls-key", certs.ClientKey, "--timeout", "5s"}
	get := []string{"get", "40.9", "-74.3"}
	tests := []struct {
		name     string
		flags    []string
		password string
		code     int
		want     string
	}{
		{"right password and server name", []string{"--tls-server-name", nodeName}, "client-pw", ExitOK, "[node n1]"},
		// gRPC checks the target's authority, the service name, whatever
		// address it dials: a certificate for "routeguide" would do too.
		{"no server name", nil, "client-pw", ExitFailed, "valid for node.routeguide, not routeguide"},
		{"wrong etcd password", []string{"--tls-server-name", nodeName}, "nope", ExitFailed, "authentication failed: wrong username or password"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{etcdauth.PasswordVar: tt.password}
			out := run(t, invocation{args: append(append(append([]string{}, flags...), tt.flags...), get...), env: env})
			wantOutcome(t, out, tt.code, tt.want)
			if strings.Contains(out.stdout+out.stderr, tt.password) {
				t.Errorf("the password shows in the output: %q %q", out.stdout, out.stderr)
			}
			if tt.code == ExitOK && out.stderr != "" {
				t.Errorf("stderr %q, want nothing", out.stderr)
			}
		})
	}
}

func TestUsageExplainsTheSecurityFlags(t *testing.T) {
	out := run(t, invocation{args: []string{"help"}})
	for _, want := range []string{"-tls-ca", "-tls-server-name", "-etcd-username", "-etcd-password-file", etcdauth.PasswordVar} {
		if !strings.Contains(out.stderr, want) {
			t.Errorf("usage does not mention %s", want)
		}
	}
	if strings.Contains(out.stderr, "-etcd-password ") {
		t.Error("usage offers a password flag")
	}
}

// wantOutcome checks a command's exit status, and that want is in its
// output: stdout when it succeeded, stderr when it did not.
func wantOutcome(t *testing.T, out outcome, code int, want string) {
	t.Helper()
	if out.code != code {
		t.Fatalf("exit status %d, want %d; stderr %q", out.code, code, out.stderr)
	}
	got := out.stderr
	if code == ExitOK {
		got = out.stdout
	}
	if !strings.Contains(got, want) {
		t.Errorf("output %q, want %q in it", got, want)
	}
}
