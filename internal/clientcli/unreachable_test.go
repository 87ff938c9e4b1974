package clientcli

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/routeguide-cluster/routeguide/internal/localetcd"
	"github.com/routeguide-cluster/routeguide/internal/testutils"
)

// silentEtcd is an address that accepts TCP connections and never answers
// on them, as an etcd that hangs (or a firewall that swallows packets after
// the handshake) does.
func silentEtcd(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
		for _, c := range held {
			c.Close()
		}
	})
	return l.Addr().String()
}

// stoppedEtcd is the address of a real etcd that has been stopped.
func stoppedEtcd(t *testing.T) string {
	t.Helper()
	s, err := localetcd.Start(localetcd.Config{Dir: t.TempDir(), ClientAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	addr := s.ClientAddr()
	s.Close()
	return addr
}

// unreachableBound is the most a client may take to say that etcd is out of
// reach: registryCheckTimeout and room for a loaded machine under -race. A
// bound on behaviour (the calls' own deadline is 10s; chat has none), not a
// benchmark.
const unreachableBound = registryCheckTimeout + 3*time.Second

func TestAClientWhoseEtcdIsUnreachableSaysSoWithinSeconds(t *testing.T) {
	etcds := []struct{ name, addr string }{
		{"nothing listens", testutils.UnreachableAddr(t)},
		{"etcd stopped", stoppedEtcd(t)},
		{"etcd accepts but never answers", silentEtcd(t)},
	}
	commands := [][]string{{"get", "40.9", "-74.3"}, {"load", "--duration", "2s"}, {"chat"}, {"tour"}}
	for _, etcd := range etcds {
		for _, command := range commands {
			t.Run(etcd.name+"/"+command[0], func(t *testing.T) {
				t.Parallel()
				url := "http://" + etcd.addr
				start := time.Now()
				out := run(t, invocation{args: append([]string{"--etcd", url}, command...), stdin: "40.9 -74.3 hello\n"})
				took := time.Since(start)
				want := "client " + command[0] + ": etcd at " + url + " is unreachable: no answer within 2s\n"
				if out.code != ExitFailed || out.stderr != want {
					t.Errorf("exit %d, stderr %q; want %d and %q", out.code, out.stderr, ExitFailed, want)
				}
				if took > unreachableBound {
					t.Errorf("took %v to say so; want at most %v", took, unreachableBound)
				}
			})
		}
	}
}

func TestAClientFindingNoNodeRegisteredSaysSo(t *testing.T) {
	s, err := localetcd.Start(localetcd.Config{Dir: t.TempDir(), ClientAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	for _, command := range [][]string{{"get", "40.9", "-74.3"}, {"load", "--duration", "2s"}, {"chat"}} {
		t.Run(command[0], func(t *testing.T) {
			start := time.Now()
			out := run(t, invocation{args: append([]string{"--etcd", s.ClientURL()}, command...)})
			took := time.Since(start)
			want := "client " + command[0] + ": no node is registered in etcd at " + s.ClientURL() + " (no key under routeguide/)\n"
			if out.code != ExitFailed || out.stderr != want {
				t.Errorf("exit %d, stderr %q; want %d and %q", out.code, out.stderr, ExitFailed, want)
			}
			if took > unreachableBound {
				t.Errorf("took %v to say so; want at most %v", took, unreachableBound)
			}
		})
	}
	if out := run(t, invocation{args: []string{"--etcd", s.ClientURL(), "--target", "etcd:///other", "get", "1", "1"}}); !strings.Contains(out.stderr, "no key under other/") {
		t.Errorf("stderr %q; want it to name the prefix of the target's service, other/", out.stderr)
	}
}
