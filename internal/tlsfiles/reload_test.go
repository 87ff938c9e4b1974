package tlsfiles

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/routeguide-cluster/routeguide/internal/certgen"
	"github.com/routeguide-cluster/routeguide/internal/testutils"
	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
	"github.com/routeguide-cluster/routeguide/internal/testutils/testcerts"
)

// interval is the reload interval of these tests: short, so that they wait little.
const interval = 20 * time.Millisecond

// within bounds every wait for a reload: many intervals, for a loaded machine.
const within = 10 * time.Second

// TestServerTakesNewFilesWithoutRestart replaces a serving certificate and
// key, by a rename over each file and by Kubernetes' swap of a secret's
// symlink: new handshakes get the new certificate within a few intervals,
// and a connection opened before goes on working.
func TestServerTakesNewFilesWithoutRestart(t *testing.T) {
	for _, how := range []string{"rename", "symlink swap"} {
		t.Run(how, func(t *testing.T) {
			a, b := testcerts.New(t), testcerts.New(t)
			certFile, keyFile, replace := a.ServerCert, a.ServerKey, func(cert, key []byte) {
				testcerts.Replace(t, a.ServerCert, cert)
				testcerts.Replace(t, a.ServerKey, key)
			}
			if how == "symlink swap" {
				secret := testcerts.NewSecret(t, map[string][]byte{"tls.crt": testcerts.Read(t, a.ServerCert), "tls.key": testcerts.Read(t, a.ServerKey)})
				certFile, keyFile = secret.Path("tls.crt"), secret.Path("tls.key")
				replace = func(cert, key []byte) { secret.Update(t, map[string][]byte{"tls.crt": cert, "tls.key": key}) }
			}
			st, err := Server{CertFile: certFile, KeyFile: keyFile}.Open(GRPCFlags, Reload{Interval: interval, Logger: discard})
			if err != nil {
				t.Fatal(err)
			}
			addr := serveEcho(t, st.Config())
			both := trust(t, a, b)
			open := dialEcho(t, addr, both)
			if got, want := serialOf(t, open.ConnectionState().PeerCertificates[0]), serialIn(t, a.ServerCert); got != want {
				t.Fatalf("served certificate %s; want A's %s", got, want)
			}

			replace(testcerts.Read(t, b.ServerCert), testcerts.Read(t, b.ServerKey))
			changed := time.Now()
			want := serialIn(t, b.ServerCert)
			poll.Until(t, within, "a new handshake to get B's certificate", func() bool {
				conn := dialEcho(t, addr, both)
				defer conn.Close()
				return serialOf(t, conn.ConnectionState().PeerCertificates[0]) == want
			})
			t.Logf("%s: new handshakes got the new certificate %v after the change (reload interval %v)", how, time.Since(changed).Round(time.Millisecond), interval)
			echo(t, open) // the connection of before works on
			if _, err := tls.Dial("tcp", addr, trust(t, a)); err == nil {
				t.Error("a client that trusts only A's CA still connects")
			}
		})
	}
}

// TestBadFilesAreRefusedAndTheOldPairServesOn writes, over a served pair,
// what a rotation half done or gone wrong leaves: a certificate without its
// key, a file cut short, an expired certificate. Each is refused with one
// log line and one count, however often it is read, and the old pair serves
// on; the whole new pair is then taken.
func TestBadFilesAreRefusedAndTheOldPairServesOn(t *testing.T) {
	a, b := testcerts.New(t), testcerts.New(t)
	logs := &testutils.SyncBuffer{}
	metrics := NewMetrics()
	// A secret, so that the test changes both files at once.
	pair := func(cert, key []byte) map[string][]byte { return map[string][]byte{"tls.crt": cert, "tls.key": key} }
	secret := testcerts.NewSecret(t, pair(testcerts.Read(t, a.ServerCert), testcerts.Read(t, a.ServerKey)))
	st, err := Server{CertFile: secret.Path("tls.crt"), KeyFile: secret.Path("tls.key")}.Open(GRPCFlags,
		Reload{Interval: interval, Logger: slog.New(slog.NewTextHandler(logs, nil)), Metrics: metrics})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveEcho(t, st.Config())
	both := trust(t, a, b)
	old := serialIn(t, a.ServerCert)
	bCert, bKey := testcerts.Read(t, b.ServerCert), testcerts.Read(t, b.ServerKey)
	expiredCert, expiredKey := b.Issue(t, "expired", certgen.Leaf{CommonName: "localhost", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true, NotAfter: time.Now().Add(-time.Minute)})

	bad := []struct {
		name      string
		cert, key []byte
		want      string
	}{
		{"B's certificate with A's key", bCert, testcerts.Read(t, a.ServerKey), "is not the key of the certificate"},
		{"B's certificate cut short", bCert[:len(bCert)/2], bKey, "cut short"},
		{"an expired certificate", testcerts.Read(t, expiredCert), testcerts.Read(t, expiredKey), "expired at"},
	}
	for i, tt := range bad {
		secret.Update(t, pair(tt.cert, tt.key))
		poll.Until(t, within, tt.name+" to be counted as refused", func() bool {
			dialEcho(t, addr, both).Close() // a handshake reads the files
			return refusals(t, metrics, RoleServer) == float64(i+1)
		})
		// Many intervals more: still the old pair, and no second log line.
		for deadline := time.Now().Add(5 * interval); time.Now().Before(deadline); {
			conn := dialEcho(t, addr, both)
			if got := serialOf(t, conn.ConnectionState().PeerCertificates[0]); got != old {
				t.Fatalf("%s: served %s; want the old certificate %s", tt.name, got, old)
			}
			conn.Close()
		}
		if n := strings.Count(logs.String(), "TLS files refused"); n != i+1 {
			t.Errorf("%s: %d refusals logged; want %d, one per bad version:\n%s", tt.name, n, i+1, logs)
		}
		if !strings.Contains(logs.String(), tt.want) {
			t.Errorf("%s: the log does not say %q:\n%s", tt.name, tt.want, logs)
		}
	}
	secret.Update(t, pair(bCert, bKey))
	want := serialIn(t, b.ServerCert)
	poll.Until(t, within, "B's whole pair to be served", func() bool {
		conn := dialEcho(t, addr, both)
		defer conn.Close()
		return serialOf(t, conn.ConnectionState().PeerCertificates[0]) == want
	})
	if got := refusals(t, metrics, RoleServer); got != float64(len(bad)) {
		t.Errorf("refusals counted: %v; want %d", got, len(bad))
	}
}

// TestServerTakesANewClientCA rotates the CA a mutual-TLS server checks
// clients against: A only, then A and B, then B only.
func TestServerTakesANewClientCA(t *testing.T) {
	a, b := testcerts.New(t), testcerts.New(t)
	caFile := a.Write(t, "client-ca.pem", testcerts.Read(t, a.CA))
	st, err := Server{CertFile: a.ServerCert, KeyFile: a.ServerKey, ClientCAFile: caFile}.Open(GRPCFlags, Reload{Interval: interval, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	serverCfg := st.Config()
	clientOf := func(f testcerts.Files) *tls.Config {
		cfg, err := Client{CAFile: a.CA, CertFile: f.ClientCert, KeyFile: f.ClientKey}.Config(GRPCFlags)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	accepts := func(f testcerts.Files) bool { return handshake(t, serverCfg, clientOf(f), "127.0.0.1") == nil }
	steps := []struct {
		name         string
		ca           []byte
		acceptA, acB bool
	}{
		{"A", testcerts.Read(t, a.CA), true, false},
		{"A and B", append(testcerts.Read(t, a.CA), testcerts.Read(t, b.CA)...), true, true},
		{"B", testcerts.Read(t, b.CA), false, true},
	}
	for _, step := range steps {
		testcerts.Replace(t, caFile, step.ca)
		poll.Until(t, within, "the server to check clients against "+step.name, func() bool {
			return accepts(a) == step.acceptA && accepts(b) == step.acB
		})
	}
}

// TestClientCredentialsTakeNewFiles rotates what a gRPC client's
// credentials read: its own certificate, which a server that trusts only B
// refuses until it is B's, and the CA it trusts, which must be B's for a
// server that shows B's certificate.
func TestClientCredentialsTakeNewFiles(t *testing.T) {
	a, b := testcerts.New(t), testcerts.New(t)
	serverCfg := mustServer(t, Server{CertFile: b.ServerCert, KeyFile: b.ServerKey, ClientCAFile: b.CA})
	serverCfg.NextProtos = []string{"h2"} // as gRPC's server credentials set, and its client requires
	server := serveEcho(t, serverCfg)
	caFile := a.Write(t, "trusted.pem", testcerts.Read(t, a.CA))
	ct, err := Client{CAFile: caFile, CertFile: a.ClientCert, KeyFile: a.ClientKey}.Open(GRPCFlags, Reload{Interval: interval, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	creds := ct.Credentials()
	handshakes := func() error {
		raw, err := net.Dial("tcp", server)
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		conn, _, err := creds.Clone().ClientHandshake(ctx, server, raw)
		if err != nil {
			return err
		}
		_, err = io.ReadFull(conn, make([]byte, 1)) // the server's word on our certificate
		return err
	}
	if err := handshakes(); err == nil {
		t.Fatal("a client that trusts A's CA only and shows A's certificate was let in by B's server")
	}
	testcerts.Replace(t, caFile, testcerts.Read(t, b.CA))
	testcerts.Replace(t, a.ClientCert, testcerts.Read(t, b.ClientCert))
	testcerts.Replace(t, a.ClientKey, testcerts.Read(t, b.ClientKey))
	poll.Until(t, within, "the client to handshake with B's CA and certificate", func() bool { return handshakes() == nil })
}

// TestEtcdConfigTakesNewFilesAndChecksTheName is the *tls.Config etcd's
// client takes: it follows its files as the credentials do, and still
// checks the server's name, by IP among the endpoints when dialled by IP.
func TestEtcdConfigTakesNewFilesAndChecksTheName(t *testing.T) {
	a, b := testcerts.New(t), testcerts.New(t)
	serverCfg := mustServer(t, Server{CertFile: b.ServerCert, KeyFile: b.ServerKey, ClientCAFile: b.CA})
	caFile := a.Write(t, "etcd-ca.pem", testcerts.Read(t, a.CA))
	ct, err := Client{CAFile: caFile, CertFile: a.ClientCert, KeyFile: a.ClientKey}.Open(EtcdFlags, Reload{Interval: interval, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	cfg := ct.Config([]string{"https://127.0.0.1:2379", "https://localhost:2379"})
	if err := handshake(t, serverCfg, cfg, "127.0.0.1"); err == nil {
		t.Fatal("handshake with A's files to B's server succeeded")
	}
	testcerts.Replace(t, caFile, testcerts.Read(t, b.CA))
	testcerts.Replace(t, a.ClientCert, testcerts.Read(t, b.ClientCert))
	testcerts.Replace(t, a.ClientKey, testcerts.Read(t, b.ClientKey))
	poll.Until(t, within, "the etcd configuration to take B's files", func() bool {
		return handshake(t, serverCfg, cfg, "127.0.0.1") == nil
	})
	if err := handshake(t, serverCfg, cfg, "localhost"); err != nil {
		t.Errorf("dialled by a name the certificate holds: %v", err)
	}
	other := ct.Config([]string{"https://127.0.0.2:2379"})
	if err := handshake(t, serverCfg, other, "127.0.0.1"); err == nil || !strings.Contains(err.Error(), "none of the endpoints") {
		t.Errorf("dialled by an IP that is no endpoint's: %v; want refused", err)
	}
	named := ct.Config(nil)
	named.ServerName = "etcd.example"
	if err := handshake(t, serverCfg, named, "127.0.0.1"); err == nil {
		t.Error("a server name the certificate lacks was accepted")
	}
}

// TestExpiryMetricFollowsTheFiles checks the expiry gauge of each role
// against the certificates' not-after times, before and after a renewal.
func TestExpiryMetricFollowsTheFiles(t *testing.T) {
	a := testcerts.New(t)
	shortCert, shortKey := a.Issue(t, "short", certgen.Leaf{CommonName: "localhost", Server: true, Validity: 10 * 24 * time.Hour})
	metrics := NewMetrics()
	r := Reload{Interval: interval, Logger: discard, Metrics: metrics}
	if _, err := (Server{CertFile: shortCert, KeyFile: shortKey, ClientCAFile: a.CA}).Open(GRPCFlags, r); err != nil {
		t.Fatal(err)
	}
	if _, err := (Client{CAFile: a.CA, CertFile: a.ClientCert, KeyFile: a.ClientKey}).Open(EtcdFlags, r); err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{
		RoleServer:     notAfter(t, shortCert).Unix(),
		RoleClientCA:   notAfter(t, a.CA).Unix(),
		RoleEtcdClient: notAfter(t, a.ClientCert).Unix(),
		RoleEtcdCA:     notAfter(t, a.CA).Unix(),
	}
	checkExpiry(t, metrics, want)

	testcerts.Replace(t, shortKey, testcerts.Read(t, a.ServerKey))
	testcerts.Replace(t, shortCert, testcerts.Read(t, a.ServerCert))
	want[RoleServer] = notAfter(t, a.ServerCert).Unix()
	poll.Until(t, within, "the gauge to show the renewed certificate", func() bool {
		return gauges(t, metrics)[RoleServer] == want[RoleServer]
	})
	checkExpiry(t, metrics, want)
}

func checkExpiry(t *testing.T, metrics *Metrics, want map[string]int64) {
	t.Helper()
	got := gauges(t, metrics)
	if len(got) != len(want) {
		t.Errorf("expiry series %v; want %v", got, want)
	}
	for role, w := range want {
		if got[role] != w {
			t.Errorf("expiry of %s: %d; want %d", role, got[role], w)
		}
	}
}

// gauges are the expiry times by role, as a scrape sees them.
func gauges(t *testing.T, metrics *Metrics) map[string]int64 {
	t.Helper()
	got := map[string]int64{}
	for _, m := range gather(t, metrics, "routeguide_tls_certificate_expiry_timestamp_seconds") {
		got[m.GetLabel()[0].GetValue()] = int64(m.GetGauge().GetValue())
	}
	return got
}

// refusals is the count of refused files of role, as a scrape sees it.
func refusals(t *testing.T, metrics *Metrics, role string) float64 {
	t.Helper()
	for _, m := range gather(t, metrics, "routeguide_tls_reload_failures_total") {
		if m.GetLabel()[0].GetValue() == role {
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no routeguide_tls_reload_failures_total series for role %s", role)
	return 0
}

func gather(t *testing.T, metrics *Metrics, name string) []*dto.Metric {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(metrics)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name {
			return f.GetMetric()
		}
	}
	return nil
}

var discard = slog.New(slog.DiscardHandler)

func mustServer(t *testing.T, s Server) *tls.Config {
	t.Helper()
	st, err := s.Open(GRPCFlags, Reload{Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	return st.Config()
}

// serveEcho serves TLS with cfg on 127.0.0.1 until the test ends, echoing
// what each connection sends.
func serveEcho(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				// A refused client is answered with an alert, not an echo.
				if conn.(*tls.Conn).Handshake() == nil {
					conn.Write([]byte("!"))
					io.Copy(conn, conn)
				}
			})
		}
	})
	return l.Addr().String()
}

// dialEcho connects to an echo server and reads its greeting.
func dialEcho(t *testing.T, addr string, cfg *tls.Config) *tls.Conn {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(conn, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	return conn
}

func echo(t *testing.T, conn *tls.Conn) {
	t.Helper()
	if _, err := conn.Write([]byte("x")); err != nil {
		t.Fatalf("write on the connection of before: %v", err)
	}
	buf := make([]byte, 1)
	if _, err := io.ReadFull(conn, buf); err != nil || buf[0] != 'x' {
		t.Fatalf("read on the connection of before: %q, %v", buf, err)
	}
	conn.Close()
}

// trust is a client configuration that trusts the CAs of files.
func trust(t *testing.T, files ...testcerts.Files) *tls.Config {
	t.Helper()
	pool := x509.NewCertPool()
	for _, f := range files {
		pool.AppendCertsFromPEM(testcerts.Read(t, f.CA))
	}
	return &tls.Config{RootCAs: pool, MinVersion: MinVersion}
}

func certIn(t *testing.T, file string) *x509.Certificate {
	t.Helper()
	return testcerts.Parse(t, testcerts.Read(t, file))
}

func serialIn(t *testing.T, file string) string { return serialOf(t, certIn(t, file)) }

func serialOf(_ *testing.T, cert *x509.Certificate) string { return cert.SerialNumber.String() }

func notAfter(t *testing.T, file string) time.Time { return certIn(t, file).NotAfter }
