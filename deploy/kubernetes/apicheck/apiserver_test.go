package apicheck

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// startEtcd starts a single etcd member on 127.0.0.1 with its data in dir,
// and returns its client URL once it answers /readyz.
func startEtcd(t *testing.T, bin, dir string) string {
	t.Helper()
	client := "http://127.0.0.1:" + freePort(t)
	peer := "http://127.0.0.1:" + freePort(t)
	p := startProcess(t, dir, "etcd", bin,
		"--name=apicheck",
		"--data-dir="+filepath.Join(dir, "etcd-data"),
		"--listen-client-urls="+client,
		"--advertise-client-urls="+client,
		"--listen-peer-urls="+peer,
		"--initial-advertise-peer-urls="+peer,
		"--initial-cluster=apicheck="+peer,
		"--log-level=warn",
	)
	httpc := &http.Client{Timeout: 2 * time.Second}
	p.waitReady(t, 30*time.Second, func() error { return get(httpc, client+"/readyz", "") })
	return client
}

// apiServer is a running kube-apiserver, and the kubeconfig to reach it as
// a member of system:masters.
type apiServer struct {
	url, kubeconfig string
}

// startAPIServer starts kube-apiserver on 127.0.0.1 with etcd at etcdURL,
// with what it needs generated in dir: a CA and a serving certificate for
// 127.0.0.1, a service-account signing key, and a token for kubectl. It
// returns once /readyz answers ok, which includes the post-start hooks
// (the built-in RBAC roles, the priority levels). Services take their
// addresses from serviceCIDR.
func startAPIServer(t *testing.T, bin, dir, etcdURL, serviceCIDR string) apiServer {
	t.Helper()
	ca, caKey := newCA(t)
	writePEM(t, filepath.Join(dir, "ca.crt"), "CERTIFICATE", ca.Raw)
	serving := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	servingKey := newKey(t)
	der, err := x509.CreateCertificate(rand.Reader, serving, ca, &servingKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, filepath.Join(dir, "apiserver.crt"), "CERTIFICATE", der)
	writeKey(t, filepath.Join(dir, "apiserver.key"), servingKey)
	writeKey(t, filepath.Join(dir, "sa.key"), newKey(t))

	token := rand.Text()
	// token,user,uid,"groups": system:masters is the API server's superuser.
	if err := os.WriteFile(filepath.Join(dir, "tokens.csv"), []byte(token+`,apicheck,apicheck,"system:masters"`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	port := freePort(t)
	url := "https://127.0.0.1:" + port
	p := startProcess(t, dir, "kube-apiserver", bin,
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port="+port,
		"--tls-cert-file="+filepath.Join(dir, "apiserver.crt"),
		"--tls-private-key-file="+filepath.Join(dir, "apiserver.key"),
		"--cert-dir="+filepath.Join(dir, "certs"),
		"--token-auth-file="+filepath.Join(dir, "tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+filepath.Join(dir, "sa.key"),
		"--service-account-signing-key-file="+filepath.Join(dir, "sa.key"),
		// No Endpoints for its own Service: on 127.0.0.1 it has no address
		// to publish.
		"--service-cluster-ip-range="+serviceCIDR,
		"--endpoint-reconciler-type=none",
		"--profiling=false",
	)

	pool := x509.NewCertPool()
	pool.AddCert(ca)
	httpc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	p.waitReady(t, 90*time.Second, func() error { return get(httpc, url+"/readyz", token) })

	kubeconfig := filepath.Join(dir, "kubeconfig")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
  - name: apicheck
    cluster: {server: %q, certificate-authority: %q}
users:
  - name: apicheck
    user: {token: %q}
contexts:
  - name: apicheck
    context: {cluster: apicheck, user: apicheck}
current-context: apicheck
`, url, filepath.Join(dir, "ca.crt"), token)
	if err := os.WriteFile(kubeconfig, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return apiServer{url: url, kubeconfig: kubeconfig}
}

// kubectl runs kubectl against the API server and returns its output (out
// and err together) and its error.
func (a apiServer) kubectl(bin string, args ...string) (string, error) {
	cmd := exec.Command(bin, append([]string{"--kubeconfig=" + a.kubeconfig, "--cache-dir=" + filepath.Join(filepath.Dir(a.kubeconfig), "kubectl-cache")}, args...)...)
	// Nothing of the user's ~/.kube.
	cmd.Env = append(os.Environ(), "HOME="+filepath.Dir(a.kubeconfig), "KUBECONFIG="+a.kubeconfig)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// get is nil when url answers 200 to a GET, with token as bearer if set.
func get(c *http.Client, url, token string) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return nil
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "apicheck CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return ca, key
}

func writeKey(t *testing.T, path string, k *ecdsa.PrivateKey) {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, path, "EC PRIVATE KEY", der)
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
