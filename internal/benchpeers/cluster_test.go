package benchpeers_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/zeromicro/go-zero/core/conf"
	"github.com/zeromicro/go-zero/core/logx"
	"github.com/zeromicro/go-zero/zrpc"
	clientv3 "go.etcd.io/etcd/client/v3"
	etcdresolver "go.etcd.io/etcd/client/v3/naming/resolver"
	"google.golang.org/grpc"
	channelzpb "google.golang.org/grpc/channelz/grpc_channelz_v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/routeguide-cluster/routeguide/discovery"
	"github.com/routeguide-cluster/routeguide/internal/clientcli"
	"github.com/routeguide-cluster/routeguide/internal/localetcd"
	"github.com/routeguide-cluster/routeguide/internal/testutils/channelztest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/grpctest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
)

// nodesPerCluster is how many node processes each framework runs.
const nodesPerCluster = 3

// framework is one way of building the cluster: how a node process starts,
// where in etcd the nodes register, and how a client dials them. Each is
// used as its documentation shows, with its defaults; the handler is the
// same routeguide.Server in all three (package handler; our node builds
// its own the same way).
type framework struct {
	name   string
	prefix string // of the nodes' keys in etcd
	// command prepares node i (from 1) to serve on addr, registered in
	// the etcd at url.
	command func(tb testing.TB, url string, i int, addr string) *exec.Cmd
	// dial connects a client to the cluster; the connection closes when tb ends.
	dial func(tb testing.TB, url string) *grpc.ClientConn
}

var frameworks = []framework{
	{name: "ours", prefix: "routeguide/", command: oursCommand, dial: dialOurs},
	{name: "go-zero", prefix: zrpcKey + "/", command: zrpcCommand, dial: dialZRPC},
	{name: "grpc-go", prefix: grpcService + "/", command: grpcCommand, dial: dialGRPC},
}

// Ours: the node command with its defaults (10s lease, 1s drain delay,
// metrics served), and the client command's connection (clientcli.Dial).
// The node id carries the port: a cluster started after another was
// killed must not wait for the dead nodes' keys to expire.
func oursCommand(_ testing.TB, url string, i int, addr string) *exec.Cmd {
	cmd := exec.Command(binaries.ours, "--etcd", url, "--listen", addr,
		"--metrics-listen", "127.0.0.1:0", "--node-id", fmt.Sprintf("ours-%d-%s", i, addr[strings.LastIndexByte(addr, ':')+1:]))
	for _, v := range os.Environ() {
		if !strings.HasPrefix(v, "ROUTEGUIDE_") {
			cmd.Env = append(cmd.Env, v)
		}
	}
	return cmd
}

func dialOurs(tb testing.TB, url string) *grpc.ClientConn {
	tb.Helper()
	conn, err := clientcli.Dial(context.Background(), "etcd:///routeguide", clientcli.WithEtcdConfig(discovery.EtcdConfig{Endpoints: []string{url}}))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn.ClientConn
}

// go-zero: the configuration goctl generates, loaded by go-zero's conf so
// that the defaults of its struct tags apply (a Go literal would leave them
// at zero). ListenOn is a fixed address because it is also what zrpc
// publishes; see freeAddr.
const zrpcKey = "routeguide.rpc"

func zrpcCommand(tb testing.TB, url string, i int, addr string) *exec.Cmd {
	tb.Helper()
	yaml := fmt.Sprintf("Name: %s\nListenOn: %s\nEtcd:\n  Hosts:\n  - %s\n  Key: %s\n", zrpcKey, addr, hostOf(url), zrpcKey)
	file := filepath.Join(tb.TempDir(), fmt.Sprintf("zrpc-%d.yaml", i))
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		tb.Fatal(err)
	}
	return exec.Command(binaries.zrpc, "-f", file)
}

// zrpcLogs keeps go-zero's client-side logs (an error log per failed call)
// out of the test's output; the logging itself still runs.
var zrpcLogs sync.Once

func dialZRPC(tb testing.TB, url string) *grpc.ClientConn {
	tb.Helper()
	zrpcLogs.Do(func() { logx.SetWriter(logx.NewWriter(io.Discard)) })
	var c zrpc.RpcClientConf
	yaml := fmt.Sprintf("Etcd:\n  Hosts:\n  - %s\n  Key: %s\n", hostOf(url), zrpcKey)
	if err := conf.LoadFromYamlBytes([]byte(yaml), &c); err != nil {
		tb.Fatal(err)
	}
	client, err := zrpc.NewClient(c)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { client.Conn().Close() })
	return client.Conn()
}

// Plain grpc-go: etcd's naming resolver and gRPC's round_robin, as etcd's
// documentation of client/v3/naming shows them.
const grpcService = "routeguide-grpc"

func grpcCommand(_ testing.TB, url string, _ int, addr string) *exec.Cmd {
	return exec.Command(binaries.grpc, "-listen", addr, "-etcd", url, "-service", grpcService)
}

func dialGRPC(tb testing.TB, url string) *grpc.ClientConn {
	tb.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 5 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	builder, err := etcdresolver.NewBuilder(cli)
	if err != nil {
		tb.Fatal(err)
	}
	conn, err := grpc.NewClient("etcd:///"+grpcService, grpc.WithResolvers(builder),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close(); cli.Close() })
	return conn
}

// hostOf is host:port of an http:// URL, as go-zero's configuration writes
// etcd hosts.
func hostOf(url string) string { return strings.TrimPrefix(url, "http://") }

// freeAddr is a loopback address with a free port. go-zero listens on, and
// publishes, the ListenOn it is configured with, so its nodes need a port
// chosen before they start; the other two are given one the same way, so
// that all three start alike.
func freeAddr(tb testing.TB) string { return grpctest.FreeAddr(tb) }

// nodeProcess is one node of a cluster, running.
type nodeProcess struct {
	name   string
	addr   string
	cmd    *exec.Cmd
	stdin  io.Writer // the node's standard input: a faulty node's switch
	stderr string    // the file its standard error goes to
	done   chan struct{}
	err    error // from Wait; set before done closes
}

// startNode starts node i of fw. Its standard output is discarded (go-zero
// logs every call there, as its default Log configuration does), its
// standard error kept in a file for when it fails. It is killed when tb ends.
func startNode(tb testing.TB, fw framework, url string, i int) *nodeProcess {
	tb.Helper()
	p := &nodeProcess{name: fmt.Sprintf("%s-%d", fw.name, i), addr: freeAddr(tb), done: make(chan struct{})}
	p.cmd = fw.command(tb, url, i, p.addr)
	p.stderr = filepath.Join(tb.TempDir(), p.name+".stderr")
	f, err := os.Create(p.stderr)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	p.cmd.Stderr = f
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		tb.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	tb.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

func (p *nodeProcess) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the node.
func (p *nodeProcess) signal(tb testing.TB, sig syscall.Signal) {
	tb.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		tb.Fatalf("signal %s: %v", p.name, err)
	}
}

// wait waits until the node has exited, and returns how.
func (p *nodeProcess) wait(tb testing.TB, within time.Duration) error {
	tb.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	select {
	case <-p.done:
		return p.err
	case <-timer.C:
		tb.Fatalf("%s still runs %v after the signal", p.name, within)
		return nil
	}
}

// failIfExited fails tb, with the node's standard error, if it has exited.
func (p *nodeProcess) failIfExited(tb testing.TB) {
	tb.Helper()
	if p.exited() {
		out, _ := os.ReadFile(p.stderr)
		tb.Fatalf("%s exited: %v; stderr:\n%s", p.name, p.err, out)
	}
}

// cpu is the CPU time, user and system, the node has used so far, from
// /proc (in clock ticks of 10ms: USER_HZ is 100 on Linux).
func (p *nodeProcess) cpu(tb testing.TB) time.Duration {
	tb.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		tb.Fatal(err)
	}
	// Fields 14 and 15, utime and stime; the command name (field 2) may
	// hold spaces, so count from the parenthesis that ends it.
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	var ticks int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			tb.Fatalf("/proc/%d/stat: %v", p.cmd.Process.Pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// cluster is the nodes of one framework and a client connected to all of them.
type cluster struct {
	fw    framework
	nodes []*nodeProcess
	conn  *grpc.ClientConn
	kv    *clientv3.Client // the test's own, to read the registry
}

// startCluster starts fw's nodes and client, and returns once every node is
// registered and the client's channel is connected to each of them.
func startCluster(tb testing.TB, fw framework, etcd *localetcd.Server, kv *clientv3.Client) *cluster {
	tb.Helper()
	c := &cluster{fw: fw, kv: kv}
	for i := range nodesPerCluster {
		c.nodes = append(c.nodes, startNode(tb, fw, etcd.ClientURL(), i+1))
	}
	poll.UntilReported(tb, 30*time.Second, poll.Interval, fw.name+": every node registered", func() (bool, string) {
		for _, n := range c.nodes {
			n.failIfExited(tb)
		}
		keys := len(c.registered(tb))
		return keys == nodesPerCluster, fmt.Sprintf("%d keys", keys)
	})
	c.conn = fw.dial(tb, etcd.ClientURL())
	c.conn.Connect() // a new channel is idle until its first call
	poll.UntilReported(tb, 30*time.Second, poll.Interval, fw.name+": the client connected to every node", func() (bool, string) {
		ready := c.readySubchannels(tb)
		return ready == nodesPerCluster, fmt.Sprintf("%d READY subchannels", ready)
	})
	return c
}

// registered is the values of the cluster's keys in etcd: the addresses,
// plain or in JSON.
func (c *cluster) registered(tb testing.TB) []string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.kv.Get(ctx, c.fw.prefix, clientv3.WithPrefix())
	if err != nil {
		tb.Fatal(err)
	}
	var values []string
	for _, kv := range resp.Kvs {
		values = append(values, string(kv.Value))
	}
	return values
}

// isRegistered reports whether a key of the cluster names the node's address.
func (c *cluster) isRegistered(tb testing.TB, n *nodeProcess) bool {
	tb.Helper()
	return slices.ContainsFunc(c.registered(tb), func(v string) bool { return strings.Contains(v, n.addr) })
}

// readySubchannels counts the subchannels (one per node address) of the
// client's channel that are READY. Every balancer here keeps one per address.
func (c *cluster) readySubchannels(tb testing.TB) int {
	tb.Helper()
	ctx := context.Background()
	var channel *channelzpb.Channel // the newest with the client's target
	// channelz answers a page at a time (100 channels): a long run has more.
	for start, end := int64(0), false; !end; {
		top, err := channelztest.Server.GetTopChannels(ctx, &channelzpb.GetTopChannelsRequest{StartChannelId: start})
		if err != nil {
			tb.Fatal(err)
		}
		for _, ch := range top.GetChannel() {
			if ch.GetData().GetTarget() == c.conn.Target() && (channel == nil || ch.GetRef().GetChannelId() > channel.GetRef().GetChannelId()) {
				channel = ch
			}
			start = max(start, ch.GetRef().GetChannelId()+1)
		}
		end = top.GetEnd() || len(top.GetChannel()) == 0
	}
	ready := 0
	for _, ref := range channel.GetSubchannelRef() {
		sub, err := channelztest.Server.GetSubchannel(ctx, &channelzpb.GetSubchannelRequest{SubchannelId: ref.GetSubchannelId()})
		if err == nil && sub.GetSubchannel().GetData().GetState().GetState() == channelzpb.ChannelConnectivityState_READY {
			ready++
		}
	}
	return ready
}

// nodesCPU is the CPU time the cluster's nodes have used so far.
func (c *cluster) nodesCPU(tb testing.TB) time.Duration {
	tb.Helper()
	var sum time.Duration
	for _, n := range c.nodes {
		sum += n.cpu(tb)
	}
	return sum
}

// callLog is a connection that notes when each unary call failed, and how,
// so that failures can be counted between two faults.
type callLog struct {
	grpc.ClientConnInterface
	calls    atomic.Int64
	mu       sync.Mutex
	failures []failure
}

type failure struct {
	at   time.Time
	code codes.Code
}

func (l *callLog) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	err := l.ClientConnInterface.Invoke(ctx, method, args, reply, opts...)
	l.calls.Add(1)
	if err != nil {
		l.mu.Lock()
		l.failures = append(l.failures, failure{time.Now(), status.Code(err)})
		l.mu.Unlock()
	}
	return err
}

// failed counts, by code, the calls that failed from from until before to.
func (l *callLog) failed(from, to time.Time) (int, map[string]int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, byCode := 0, map[string]int{}
	for _, f := range l.failures {
		if !f.at.Before(from) && f.at.Before(to) {
			n++
			byCode[f.code.String()]++
		}
	}
	return n, byCode
}
