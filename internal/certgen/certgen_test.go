package certgen_test

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"

	"github.com/routeguide-cluster/routeguide/internal/certgen"
	"github.com/routeguide-cluster/routeguide/internal/testutils/testcerts"
)

func TestIssuedCertificatesVerifyAgainstTheirCAOnly(t *testing.T) {
	ca, err := certgen.NewCA("test CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	other, err := certgen.NewCA("other CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.Issue(certgen.Leaf{CommonName: "server", DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.Issue(certgen.Leaf{CommonName: "client", Client: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []certgen.Pair{server, client} {
		if _, err := tls.X509KeyPair(p.CertPEM, p.KeyPEM); err != nil {
			t.Errorf("the key does not go with its certificate: %v", err)
		}
	}
	serverCert := testcerts.Parse(t, server.CertPEM)
	for _, name := range []string{"localhost", "127.0.0.1"} {
		if _, err := serverCert.Verify(x509.VerifyOptions{Roots: pool(t, ca), DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("server certificate for %s: %v", name, err)
		}
	}
	if _, err := serverCert.Verify(x509.VerifyOptions{Roots: pool(t, other), DNSName: "localhost"}); err == nil {
		t.Error("the server certificate verifies against a CA that did not sign it")
	}
	if _, err := serverCert.Verify(x509.VerifyOptions{Roots: pool(t, ca), DNSName: "example.com"}); err == nil {
		t.Error("the server certificate verifies for a name it does not carry")
	}
	if _, err := testcerts.Parse(t, client.CertPEM).Verify(x509.VerifyOptions{Roots: pool(t, ca), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate: %v", err)
	}
}

func TestNotAfterMakesAnExpiredCertificate(t *testing.T) {
	ca, err := certgen.NewCA("test CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	expired, err := ca.Issue(certgen.Leaf{CommonName: "old", Server: true, NotAfter: time.Now().Add(-time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := testcerts.Parse(t, expired.CertPEM).Verify(x509.VerifyOptions{Roots: pool(t, ca)}); err == nil {
		t.Error("an expired certificate verifies")
	}
}

func pool(t *testing.T, ca *certgen.CA) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(ca.CertPEM) {
		t.Fatal("CA certificate does not parse")
	}
	return p
}
