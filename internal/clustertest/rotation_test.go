package clustertest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/routeguide-cluster/routeguide/discovery"
	"github.com/routeguide-cluster/routeguide/internal/clientcli"
	"github.com/routeguide-cluster/routeguide/internal/etcdauth"
	"github.com/routeguide-cluster/routeguide/internal/load"
	"github.com/routeguide-cluster/routeguide/internal/localetcd"
	"github.com/routeguide-cluster/routeguide/internal/testutils/etcdtest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/loadtest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
	"github.com/routeguide-cluster/routeguide/internal/testutils/testcerts"
	"github.com/routeguide-cluster/routeguide/internal/tlsfiles"
)

// rotationReload is the reload interval of the rotation test's nodes and
// client: short, so that the test waits little.
const rotationReload = 100 * time.Millisecond

// TestCARotationUnderLoadFailsNoCall moves a secured cluster from CA A to
// CA B in the three steps of docs/OPERATIONS.md, under load, and restarts
// no node and no client. Node processes read their files from a Kubernetes
// style secret (a symlink swap per change), the client from files renamed
// over; etcd (TLS, client certificates, users) takes its own certificate at
// each handshake but its CA only at a restart, which the steps make.
//
//  1. trust both: every CA file holds A and B;
//  2. move: every certificate is B's, and a node that starts now joins;
//  3. drop A: every CA file holds B only, and another node joins.
//
// At each step the nodes that run from the start take the new files for new
// handshakes, the client's calls reach the node that joined (new handshakes
// of the client with its new files), and no call fails.
func TestCARotationUnderLoadFailsNoCall(t *testing.T) {
	a, b := testcerts.New(t), testcerts.New(t)
	caA, caB := testcerts.Read(t, a.CA), testcerts.Read(t, b.CA)
	bothCAs := slices.Concat(caA, caB)
	pairs := func(f testcerts.Files) rotationPairs {
		return rotationPairs{
			server: [2][]byte{testcerts.Read(t, f.ServerCert), testcerts.Read(t, f.ServerKey)},
			client: [2][]byte{testcerts.Read(t, f.ClientCert), testcerts.Read(t, f.ClientKey)},
		}
	}
	onA, onB := pairs(a), pairs(b)

	// etcd's files; its CA file is read when it starts.
	etcdDir := t.TempDir()
	etcdCert, etcdKey, etcdCA := filepath.Join(etcdDir, "etcd.pem"), filepath.Join(etcdDir, "etcd-key.pem"), filepath.Join(etcdDir, "ca.pem")
	testcerts.Replace(t, etcdCert, onA.server[0])
	testcerts.Replace(t, etcdKey, onA.server[1])
	testcerts.Replace(t, etcdCA, caA)
	testcerts.Replace(t, filepath.Join(etcdDir, "root.pem"), onA.client[0])
	testcerts.Replace(t, filepath.Join(etcdDir, "root-key.pem"), onA.client[1])
	etcd := startRotationEtcd(t, etcdDir, "127.0.0.1:0", etcdCert, etcdKey, etcdCA)
	admin, err := tlsfiles.Client{CAFile: a.CA, CertFile: a.ClientCert, KeyFile: a.ClientKey}.Config(tlsfiles.EtcdFlags)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := etcd.EnableAuth(ctx, admin, etcdtest.RootPassword,
		localetcd.User{Name: "node", Password: nodePassword, Prefixes: []string{"routeguide/", "routeguide-notes/"}},
		localetcd.User{Name: "client", Password: clientPassword, Prefixes: []string{"routeguide/"}}); err != nil {
		t.Fatal(err)
	}
	url := etcd.ClientURL()
	// An observer of the registry, as root, with files that follow the CA.
	observer, err := etcdauth.Config{
		TLS:      tlsfiles.Client{CAFile: etcdCA, CertFile: filepath.Join(etcdDir, "root.pem"), KeyFile: filepath.Join(etcdDir, "root-key.pem")},
		Username: "root", Password: etcdtest.RootPassword,
	}.Open(tlsfiles.Reload{Interval: rotationReload})
	if err != nil {
		t.Fatal(err)
	}

	// The nodes' secret, and the client's files.
	secret := testcerts.NewSecret(t, nodeSecret(caA, onA))
	passwordFile := filepath.Join(t.TempDir(), "etcd-password")
	testcerts.Replace(t, passwordFile, []byte(nodePassword+"\n"))
	clientDir := t.TempDir()
	clientFile := func(name string) string { return filepath.Join(clientDir, name) }
	writeClient := func(ca []byte, p rotationPairs) {
		for name, data := range map[string][]byte{"ca.pem": ca, "client.pem": p.client[0], "client-key.pem": p.client[1]} {
			testcerts.Replace(t, clientFile(name), data)
		}
	}
	writeClient(caA, onA)

	addrs := map[string]string{}
	startNode := func(id string) {
		p, addr := startServingWith(t, []string{
			"ROUTEGUIDE_TLS_CERT=" + secret.Path("tls.crt"), "ROUTEGUIDE_TLS_KEY=" + secret.Path("tls.key"),
			"ROUTEGUIDE_TLS_CLIENT_CA=" + secret.Path("ca.crt"),
			"ROUTEGUIDE_ETCD_CA=" + secret.Path("ca.crt"),
			"ROUTEGUIDE_ETCD_CERT=" + secret.Path("etcd.crt"), "ROUTEGUIDE_ETCD_KEY=" + secret.Path("etcd.key"),
		}, "--node-id="+id, "--etcd="+url, "--etcd-username=node", "--etcd-password-file="+passwordFile,
			"--lease-ttl="+clusterTTL.String(), "--drain-delay=0s", "--tls-reload-interval="+rotationReload.String())
		t.Cleanup(p.kill)
		p.waitFor(t, "registered")
		addrs[id] = addr
	}
	startNode("n1")
	startNode("n2")

	// The client, as `client --tls-ca ... load` makes it, in this process.
	reload := tlsfiles.Reload{Interval: rotationReload}
	nodeTLS, err := tlsfiles.Client{CAFile: clientFile("ca.pem"), CertFile: clientFile("client.pem"), KeyFile: clientFile("client-key.pem"), ServerName: "localhost"}.Open(tlsfiles.GRPCFlags, reload)
	if err != nil {
		t.Fatal(err)
	}
	etcdCreds, err := etcdauth.Config{
		TLS:      tlsfiles.Client{CAFile: clientFile("ca.pem"), CertFile: clientFile("client.pem"), KeyFile: clientFile("client-key.pem")},
		Username: "client", Password: clientPassword,
	}.Open(reload)
	if err != nil {
		t.Fatal(err)
	}
	etcdCfg, err := etcdCreds.For([]string{url})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := clientcli.Dial(t.Context(), "etcd:///routeguide",
		clientcli.WithTransportCredentials(nodeTLS.Credentials()), clientcli.WithEtcdConfig(etcdCfg))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	calls := loadtest.NewLog(conn)
	poll.Until(t, 20*time.Second, "n1 and n2 to answer the client", func() bool {
		res, _ := load.Run(t.Context(), calls, load.Config{RPC: load.Get, Concurrency: 2, Requests: 20, Timeout: 5 * time.Second})
		return res.ByNode["n1"] > 0 && res.ByNode["n2"] > 0
	})

	restartEtcd := func(ca []byte) {
		testcerts.Replace(t, etcdCA, ca)
		etcd.Close()
		etcd = startRotationEtcd(t, etcdDir, etcd.ClientAddr(), etcdCert, etcdKey, etcdCA)
	}
	// probe is a new connection to a node, with a client certificate and
	// CAs of its own: what the node serves to new handshakes now.
	probe := func(addr string, trusted []byte, cert testcerts.Files) (*x509.Certificate, error) {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(trusted)
		pair, err := tls.LoadX509KeyPair(cert.ClientCert, cert.ClientKey)
		if err != nil {
			t.Fatal(err)
		}
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{pair}, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12})
		if err != nil {
			return nil, err
		}
		defer c.Close()
		// Over TLS 1.3 the node refuses a client certificate after the
		// client's side of the handshake: read its first frame, or its alert.
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != nil {
			return nil, err
		}
		return c.ConnectionState().PeerCertificates[0], nil
	}
	servesB := func(addr string) bool {
		cert, err := probe(addr, caB, b)
		return err == nil && cert.Equal(testcerts.Parse(t, onB.server[0]))
	}

	steps := []struct {
		name   string
		change func()
		etcdCA []byte // when set, etcd restarts with this CA after the change
		join   string // a node that starts after the change
		// taken holds once the nodes that ran before take the change.
		taken func(addr string) bool
	}{
		{"1 trust both CAs", func() {
			secret.Update(t, nodeSecret(bothCAs, onA))
			writeClient(bothCAs, onA)
		}, bothCAs, "", func(addr string) bool {
			_, err := probe(addr, caA, b) // B's client certificate
			return err == nil
		}},
		{"2 move every certificate to B", func() {
			secret.Update(t, nodeSecret(bothCAs, onB))
			writeClient(bothCAs, onB)
			testcerts.Replace(t, etcdCert, onB.server[0]) // etcd takes it at its next handshake
			testcerts.Replace(t, etcdKey, onB.server[1])
			testcerts.Replace(t, filepath.Join(etcdDir, "root.pem"), onB.client[0])
			testcerts.Replace(t, filepath.Join(etcdDir, "root-key.pem"), onB.client[1])
		}, nil, "n3", servesB},
		{"3 drop CA A", func() {
			secret.Update(t, nodeSecret(caB, onB))
			writeClient(caB, onB)
		}, caB, "n4", func(addr string) bool {
			_, errA := probe(addr, caB, a) // A's client certificate
			return errA != nil && servesB(addr)
		}},
	}
	var report []string
	for _, step := range steps {
		res := underLoad(t, calls, func() {
			changed := time.Now()
			step.change()
			for _, id := range []string{"n1", "n2"} {
				poll.Until(t, 20*time.Second, id+" to take step "+step.name+" for new handshakes", func() bool { return step.taken(addrs[id]) })
			}
			taken := time.Since(changed)
			restarted := ""
			if step.etcdCA != nil {
				start := time.Now()
				restartEtcd(step.etcdCA)
				restarted = fmt.Sprintf("; etcd restarted with the new CA file in %v", time.Since(start).Round(time.Millisecond))
			}
			joined := ""
			if step.join != "" {
				startNode(step.join)
				started := time.Now()
				poll.Until(t, 20*time.Second, "the client's calls to reach "+step.join, func() bool { return calls.Count(step.join, started, time.Time{}) > 0 })
				joined = fmt.Sprintf("; the client's first call answered by %s (a new handshake) %v after it registered",
					step.join, time.Since(started).Round(time.Millisecond))
			}
			// n1 keeps its lease through its own etcd connection, made
			// again after etcd's restart with the files of the moment.
			waitLeaseRenewed(t, observer, url, "n1")
			report = append(report, fmt.Sprintf("%s: n1 and n2 took the files for new handshakes %v after the change (reload interval %v)%s%s",
				step.name, taken.Round(time.Millisecond), rotationReload, restarted, joined))
		})
		report = append(report, fmt.Sprintf("  load during %s: ok=%d failed=%d errors=%v by node %v", step.name, res.OK, res.Failed, res.Errors, res.ByNode))
		if res.Failed != 0 || res.OK == 0 {
			t.Errorf("%s: %d calls ok, %d failed (%v); want no failed call", step.name, res.OK, res.Failed, res.Errors)
		}
		if res.ByNode["n1"] == 0 || res.ByNode["n2"] == 0 {
			t.Errorf("%s: calls answered by node %v; want n1 and n2 answering all along, on connections opened before", step.name, res.ByNode)
		}
	}
	t.Log("\n" + strings.Join(report, "\n"))
}

const clientPassword = "cl1ent-Passw0rd"

// rotationPairs are the certificates and keys of one CA's step: the
// server's (nodes and etcd) and the client's (the client, and the nodes
// towards etcd).
type rotationPairs struct{ server, client [2][]byte }

// nodeSecret is what a node reads: its serving pair, the CA it checks
// clients and etcd against, and its certificate for etcd.
func nodeSecret(ca []byte, p rotationPairs) map[string][]byte {
	return map[string][]byte{
		"tls.crt": p.server[0], "tls.key": p.server[1], "ca.crt": ca,
		"etcd.crt": p.client[0], "etcd.key": p.client[1],
	}
}

// startRotationEtcd starts etcd on addr over TLS, requiring client
// certificates from the CAs in caFile; a restart on the same dir keeps the
// users and the registry.
func startRotationEtcd(t *testing.T, dir, addr, cert, key, caFile string) *localetcd.Server {
	t.Helper()
	s, err := localetcd.Start(localetcd.Config{Dir: dir, ClientAddr: addr, BcryptCost: etcdtest.BcryptCost,
		ClientTLS: localetcd.ClientTLS{CertFile: cert, KeyFile: key, CAFile: caFile}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// underLoad runs GetFeature from 8 workers while during runs, and returns
// what they counted.
func underLoad(t *testing.T, calls *loadtest.Log, during func()) load.Result {
	t.Helper()
	run := loadtest.Start(t, calls, load.Config{RPC: load.Get, Concurrency: 8, Duration: 5 * time.Minute, Timeout: 5 * time.Second})
	during()
	return run.Stop(t)
}

// waitLeaseRenewed waits until node id has renewed its lease since the
// call, through its own connection to etcd: the lease's time to live grows
// again, or the node holds its key under a new lease.
func waitLeaseRenewed(t *testing.T, observer *etcdauth.Credentials, url, id string) {
	t.Helper()
	cfg, err := observer.For([]string{url})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := discovery.NewEtcdClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	var lease clientv3.LeaseID
	var lowest int64 = -1
	poll.UntilReported(t, 20*time.Second, 50*time.Millisecond, id+" to renew its lease", func() (bool, string) {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		resp, err := cli.Get(ctx, discovery.Prefix("routeguide")+id)
		if err != nil || len(resp.Kvs) == 0 {
			return false, fmt.Sprintf("key: %v, %v", resp, err)
		}
		if l := clientv3.LeaseID(resp.Kvs[0].Lease); l != lease {
			if lease != 0 {
				return true, "" // registered again, under a new lease
			}
			lease = l
		}
		ttl, err := cli.TimeToLive(ctx, lease)
		if err != nil {
			return false, fmt.Sprintf("time to live: %v", err)
		}
		if lowest >= 0 && ttl.TTL > lowest {
			return true, ""
		}
		if lowest < 0 || ttl.TTL < lowest {
			lowest = ttl.TTL
		}
		return false, fmt.Sprintf("time to live %ds", ttl.TTL)
	})
}
