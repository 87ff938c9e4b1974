package etcdtest

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/routeguide-cluster/routeguide/internal/localetcd"
	"github.com/routeguide-cluster/routeguide/internal/testutils/faultproxy"
)

// ClusterConfig describes a cluster of several members, for fault tests.
type ClusterConfig struct {
	// Dir holds the members' data, each in a directory of its own.
	Dir string
	// Members is how many members to start; 3 when zero.
	Members int
	// LogLevel is etcd's own log level, as in localetcd.Config.
	LogLevel string
	// StartTimeout bounds the wait for every member to be ready; zero means 30s.
	StartTimeout time.Duration
}

// Cluster is a running etcd cluster on 127.0.0.1.
//
// Every member is reached, by clients and by the other members alike, through
// a proxy of its own (package faultproxy). The proxies are what make the
// cluster possible on free ports: each member must know every member's peer
// URL before any of them starts, and etcd cannot be handed a listener it did
// not open. A proxy listens first, at a free port that is never given up, and
// is told where its member listens once the member has started; so no port is
// picked, released and hoped still free. They are also how Lose cuts a member
// off as abruptly as a crash.
type Cluster struct {
	members []*Member
}

// Member is one member of a Cluster.
type Member struct {
	name          string
	client, peers *faultproxy.Proxy
	config        *embed.Config // to restart it from its data
	timeout       time.Duration // StartTimeout, for a restart

	mu     sync.Mutex // guards etcd and closed
	etcd   *embed.Etcd
	closed bool
}

// StartCluster starts the members and returns once each serves clients.
func StartCluster(cfg ClusterConfig) (*Cluster, error) {
	if cfg.Dir == "" {
		return nil, errors.New("start etcd cluster: no data directory")
	}
	if cfg.Members == 0 {
		cfg.Members = 3
	}
	c := &Cluster{}
	var initial []string
	timeout := localetcd.StartTimeout(cfg.StartTimeout)
	for i := range cfg.Members {
		m := &Member{name: fmt.Sprintf("m%d", i), timeout: timeout}
		c.members = append(c.members, m)
		var err error
		if m.client, err = faultproxy.Start(""); err == nil {
			m.peers, err = faultproxy.Start("")
		}
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("start etcd cluster: member %s: %w", m.name, err)
		}
		initial = append(initial, m.name+"=http://"+m.peers.Addr())
	}
	token := "localetcd-" + rand.Text()
	for _, m := range c.members {
		ec := embed.NewConfig()
		ec.Name = m.name
		ec.Dir = filepath.Join(cfg.Dir, m.name)
		ec.ListenClientUrls = []url.URL{{Scheme: "http", Host: "127.0.0.1:0"}}
		ec.AdvertiseClientUrls = []url.URL{{Scheme: "http", Host: m.client.Addr()}}
		ec.ListenPeerUrls = []url.URL{{Scheme: "http", Host: "127.0.0.1:0"}}
		ec.AdvertisePeerUrls = []url.URL{{Scheme: "http", Host: m.peers.Addr()}}
		ec.InitialCluster = strings.Join(initial, ",")
		ec.InitialClusterToken = token
		ec.ClusterState = embed.ClusterStateFlagNew
		localetcd.SetLogging(ec, cfg.LogLevel)
		m.config = ec
		// StartEtcd does not wait for the other members: they are waited
		// for together below.
		if err := m.launch(); err != nil {
			c.Close()
			return nil, fmt.Errorf("start etcd cluster: member %s: %w", m.name, err)
		}
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for _, m := range c.members {
		if err := localetcd.WaitReady(m.current(), timer.C, timeout); err != nil {
			c.Close()
			return nil, fmt.Errorf("start etcd cluster: member %s: %w", m.name, err)
		}
	}
	return c, nil
}

// Members are the members, lost ones included, in the order they started.
func (c *Cluster) Members() []*Member { return c.members }

// ClientURLs are the URLs of every member, for clients.
func (c *Cluster) ClientURLs() []string {
	var urls []string
	for _, m := range c.members {
		urls = append(urls, m.ClientURL())
	}
	return urls
}

// Client is a client of every member, closed when tb ends: it goes on
// through the members left when one is lost.
func (c *Cluster) Client(tb testing.TB) *clientv3.Client {
	tb.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.ClientURLs(), DialTimeout: 5 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cli.Close() })
	return cli
}

// Leader is the member that leads the cluster now, as it says itself, or nil
// while none does (during an election).
func (c *Cluster) Leader() *Member {
	for _, m := range c.members {
		if e := m.current(); running(e) && e.Server.Leader() == e.Server.MemberID() {
			return m
		}
	}
	return nil
}

// Close stops every member that still runs and its proxies.
func (c *Cluster) Close() {
	for _, m := range c.members {
		m.close()
	}
}

// Name is the member's name in the cluster.
func (m *Member) Name() string { return m.name }

// ClientURL is the URL clients reach the member at.
func (m *Member) ClientURL() string { return "http://" + m.client.Addr() }

// Lose stops the member as abruptly as a crash does: every connection to it,
// from clients and from the other members, is reset at once and new ones are
// refused, and the member stops without handing its leadership over. It
// returns once the member has stopped. Losing a lost member does nothing.
func (m *Member) Lose() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stop()
}

// Restart starts a lost member again from its data, at the same addresses,
// and returns once it serves clients. Restarting a running member does
// nothing.
func (m *Member) Restart() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("restart etcd member %s: the cluster is closed", m.name)
	}
	if running(m.etcd) {
		return nil
	}
	if err := m.launch(); err != nil {
		return fmt.Errorf("restart etcd member %s: %w", m.name, err)
	}
	timer := time.NewTimer(m.timeout)
	defer timer.Stop()
	if err := localetcd.WaitReady(m.etcd, timer.C, m.timeout); err != nil {
		m.stop()
		return fmt.Errorf("restart etcd member %s: %w", m.name, err)
	}
	return nil
}

// launch starts the member from its configuration and points its proxies at
// it; the caller holds mu, or owns the member alone. On a restart the data
// directory holds the cluster, so the initial cluster settings are ignored.
func (m *Member) launch() error {
	e, err := embed.StartEtcd(m.config)
	if err != nil {
		return err
	}
	m.etcd = e
	m.client.SetTarget(e.Clients[0].Addr().String())
	m.peers.SetTarget(e.Peers[0].Addr().String())
	m.client.Restore()
	m.peers.Restore()
	return nil
}

// stop cuts the member's proxies and stops it; the caller holds mu.
func (m *Member) stop() {
	for _, p := range []*faultproxy.Proxy{m.client, m.peers} {
		if p != nil {
			p.Cut()
		}
	}
	if running(m.etcd) {
		// HardStop first: Close alone would move the leadership to
		// another member before stopping, which a crash does not do.
		m.etcd.Server.HardStop()
		m.etcd.Close()
	}
}

// close stops the member for good, its proxies too.
func (m *Member) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stop()
	m.closed = true
	for _, p := range []*faultproxy.Proxy{m.client, m.peers} {
		if p != nil {
			p.Close()
		}
	}
}

// current is the member's etcd now, nil before it first started.
func (m *Member) current() *embed.Etcd {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.etcd
}

// running reports whether e was started and has not stopped.
func running(e *embed.Etcd) bool {
	if e == nil {
		return false
	}
	select {
	case <-e.Server.StopNotify():
		return false
	default:
		return true
	}
}
