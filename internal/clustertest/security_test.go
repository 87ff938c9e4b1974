package clustertest

import (
	"context"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/routeguide-cluster/routeguide/internal/etcdauth"
	"github.com/routeguide-cluster/routeguide/internal/localetcd"
	"github.com/routeguide-cluster/routeguide/internal/testutils/etcdtest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/testcerts"
	"github.com/routeguide-cluster/routeguide/internal/tlsfiles"
)

const nodePassword = "n0de-Passw0rd"

// startSecuredEtcd starts etcd over TLS with authentication on, and a user
// "node" that may read and write under routeguide/. It returns the URL.
func startSecuredEtcd(t *testing.T, certs testcerts.Files) string {
	t.Helper()
	s, _ := etcdtest.StartSecured(t, certs, etcdtest.Options{},
		localetcd.User{Name: "node", Password: nodePassword, Prefixes: []string{"routeguide/", "routeguide-notes/"}})
	return s.ClientURL()
}

func TestWrongEtcdPasswordExits1WithOneLine(t *testing.T) {
	certs := testcerts.New(t)
	url := startSecuredEtcd(t, certs)
	start := time.Now()
	code, _, stderr := runToExit(t, []string{etcdauth.PasswordVar + "=not-the-password"},
		"--etcd="+url, "--etcd-ca="+certs.CA, "--etcd-username=node")
	if code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
	checkOneLine(t, stderr, `as "node": authentication failed: wrong username or password`)
	if strings.Contains(stderr, "not-the-password") {
		t.Errorf("stderr shows the password: %q", stderr)
	}
	t.Logf("exited %v after it started", time.Since(start))
}

func TestSecurityFlagErrors(t *testing.T) {
	certs := testcerts.New(t)
	missing := filepath.Join(certs.Dir, "missing.pem")
	tests := []struct {
		name string
		env  []string
		args []string
		code int
		want string
	}{
		{"no --etcd-password flag", nil, []string{"--etcd-password=secret"}, 2, "-etcd-password"},
		{"TLS certificate without key", nil, []string{"--tls-cert=" + certs.ServerCert}, 2, "--tls-cert: set without --tls-key"},
		{"password both ways", []string{etcdauth.PasswordVar + "=x"}, []string{"--etcd=http://127.0.0.1:1", "--etcd-username=node", "--etcd-password-file=" + missing}, 2, "--etcd-password-file: ROUTEGUIDE_ETCD_PASSWORD is set too"},
		{"missing TLS certificate", nil, []string{"--tls-cert=" + missing, "--tls-key=" + certs.ServerKey}, 1, "--tls-cert: open " + missing + ": no such file or directory"},
		{"client CA that is no certificate", nil, []string{"--tls-cert=" + certs.ServerCert, "--tls-key=" + certs.ServerKey, "--tls-client-ca=" + certs.ServerKey}, 1, "--tls-client-ca: " + certs.ServerKey + " holds no PEM certificate"},
		{"missing password file", nil, []string{"--etcd=http://127.0.0.1:1", "--etcd-username=node", "--etcd-password-file=" + missing}, 1, "--etcd-password-file: open " + missing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runToExit(t, tt.env, tt.args...)
			if code != tt.code {
				t.Errorf("exit status %d, want %d", code, tt.code)
			}
			checkOneLine(t, stderr, tt.want)
			if strings.Contains(stderr, "secret") {
				t.Errorf("stderr shows the password: %q", stderr)
			}
		})
	}
}

// TestSecuredNodeRegistersAndServesMutualTLS runs the node binary as a
// production node would: mutual TLS for gRPC, etcd over TLS with a user
// whose password is in a file. It registers, answers over TLS, never logs
// the password, and drains on SIGTERM.
func TestSecuredNodeRegistersAndServesMutualTLS(t *testing.T) {
	certs := testcerts.New(t)
	url := startSecuredEtcd(t, certs)
	passwordFile := certs.Write(t, "etcd-password", []byte(nodePassword+"\n"))
	p, addr := startServingWith(t, []string{
		"ROUTEGUIDE_TLS_CERT=" + certs.ServerCert,
		"ROUTEGUIDE_TLS_KEY=" + certs.ServerKey,
		"ROUTEGUIDE_TLS_CLIENT_CA=" + certs.CA,
		"ROUTEGUIDE_ETCD_CA=" + certs.CA,
	}, "--node-id=n1", "--drain-delay=0s", "--etcd="+url, "--etcd-username=node", "--etcd-password-file="+passwordFile)
	p.waitFor(t, "registered")

	clientTLS, err := tlsfiles.Client{CAFile: certs.CA, CertFile: certs.ClientCert, KeyFile: certs.ClientKey}.Config(tlsfiles.GRPCFlags)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(clientTLS)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health over mutual TLS: %v, %v", resp, err)
	}

	p.signal(t, syscall.SIGTERM)
	if err := p.wait(t); err != nil {
		t.Fatalf("node after SIGTERM: %v", err)
	}
	all := strings.Join(p.lines, "\n")
	if strings.Contains(all, nodePassword) {
		t.Errorf("the node logged its etcd password:\n%s", all)
	}
	if !strings.Contains(all, `"tls":"mutual"`) {
		t.Errorf("the serving record does not say tls=mutual:\n%s", all)
	}
}
