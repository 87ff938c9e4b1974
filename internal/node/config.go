package node

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/routeguide-cluster/routeguide/discovery"
	"github.com/routeguide-cluster/routeguide/internal/etcdauth"
	"github.com/routeguide-cluster/routeguide/internal/tlsfiles"
	"github.com/routeguide-cluster/routeguide/internal/tracing"
	"github.com/routeguide-cluster/routeguide/routeguide"
	"github.com/routeguide-cluster/routeguide/routeguide/notes"
	"github.com/routeguide-cluster/routeguide/routeguide/notes/etcdnotes"
)

// Config describes one node. Start from DefaultConfig; Validate checks it
// before anything starts, and its errors name the flag at fault.
type Config struct {
	// NodeID names the node in etcd, in logs and in the routeguide-node
	// response header. Empty means hostname:port.
	NodeID string
	// Listen is the gRPC listen address.
	Listen string
	// Advertise is the address registered in etcd. Empty means derive it.
	Advertise string
	// AdvertiseNetwork, a CIDR, picks the derived address: the host's
	// address inside it. Empty means the automatic choice (see
	// discovery.AdvertiseAddr).
	AdvertiseNetwork string
	// Etcd lists the etcd endpoints. Empty means standalone: serve without
	// registering.
	Etcd []string
	// NotesEtcd lists the endpoints of the etcd cluster that keeps the
	// RouteChat notes. Empty means Etcd's, on a connection of its own.
	NotesEtcd []string
	// NotesBudget is how much data the notes' etcd may hold while notes are
	// posted (see etcdnotes.Config.Budget): keep it well below etcd's
	// --quota-backend-bytes.
	NotesBudget int64
	// NotesCacheBytes bounds the notes read from etcd that the node keeps
	// in memory (see etcdnotes.Config.CacheBytes).
	NotesCacheBytes int64
	// NotesWriteRate bounds the notes per second the node writes to etcd
	// (see etcdnotes.Config.WriteRate).
	NotesWriteRate int
	// Service is the name the node registers under.
	Service string
	// LeaseTTL is the TTL of the node's etcd lease.
	LeaseTTL time.Duration
	// MetricsListen is the address of the HTTP metrics listener. Empty disables it.
	MetricsListen string
	// DebugEndpoints adds pprof and gRPC's channelz to the metrics listener.
	DebugEndpoints bool
	// FeaturesFile is a features JSON file. Empty means the built-in data set.
	FeaturesFile string
	// DrainDelay is how long a draining node keeps serving after it has left
	// the registry, so clients stop picking it before it stops.
	DrainDelay time.Duration
	// ShutdownTimeout bounds the graceful stop; after it, open calls are cut.
	ShutdownTimeout time.Duration
	// MaxMessageBytes bounds every message the node receives or sends.
	MaxMessageBytes int
	// Limits bound what one stream may send.
	Limits routeguide.Limits
	// NoteLimits bound the notes RouteChat keeps and answers. PerLocation,
	// MessageBytes and AnswerBytes hold for both stores: etcd's, shared by a
	// cluster, and a standalone node's memory; Bytes bounds that memory.
	NoteLimits notes.Limits
	// MaxConcurrentStreams bounds the calls one client connection may have
	// open at once; gRPC clients queue the calls past it.
	MaxConcurrentStreams int
	// NoteMaxAge is how long a cluster keeps a note in etcd (see package etcdnotes).
	NoteMaxAge time.Duration
	// Version is reported in the registration metadata.
	Version string
	// Logger receives the node's logs; nil means slog.Default().
	Logger *slog.Logger
	// TLS, when its files are set, serves gRPC (RouteGuide, health and
	// reflection alike) over TLS: --tls-cert and --tls-key, and with
	// --tls-client-ca mutual TLS, which refuses clients without a
	// certificate from that CA.
	TLS tlsfiles.Server
	// TLSReloadInterval is how often, at most, the TLS files of TLS and
	// EtcdAuth are read again, so that renewed ones are taken without a
	// restart (see tlsfiles.Reload).
	TLSReloadInterval time.Duration
	// OTLPEndpoint, when set, is the host:port of the OTLP/gRPC collector
	// the node exports a trace of every call to (package tracing), with
	// the etcd calls of a RouteChat as its children.
	OTLPEndpoint string
	// ServerOptions are added to the gRPC server's, after the node's own
	// (a program that embeds a node adds interceptors this way: tests add
	// faults); there is no flag for them.
	ServerOptions []grpc.ServerOption
	// EtcdAuth is how the node reaches a secured etcd: --etcd-ca,
	// --etcd-cert, --etcd-key, --etcd-username, and the password from
	// ROUTEGUIDE_ETCD_PASSWORD or --etcd-password-file. It prints without
	// the password.
	EtcdAuth etcdauth.Config
}

// DefaultConfig returns the configuration a node runs with when no flag is given.
func DefaultConfig() Config {
	return Config{
		Listen:          ":50051",
		Etcd:            []string{"http://127.0.0.1:2379"},
		Service:         "routeguide",
		LeaseTTL:        10 * time.Second,
		MetricsListen:   ":9464",
		DrainDelay:      time.Second,
		ShutdownTimeout: 10 * time.Second,
		MaxMessageBytes: 1 << 20,
		Limits: routeguide.Limits{
			RoutePoints:   100_000,
			ChatNotes:     10_000,
			NoteWrites:    64,
			NoteWriteWait: time.Second,
			AnswerWait:    10 * time.Second,
		},
		NoteLimits:           notes.DefaultLimits(),
		NoteMaxAge:           24 * time.Hour,
		NotesBudget:          etcdnotes.DefaultBudget,
		NotesCacheBytes:      etcdnotes.DefaultCacheBytes,
		NotesWriteRate:       etcdnotes.DefaultWriteRate,
		MaxConcurrentStreams: 100,
		TLSReloadInterval:    tlsfiles.DefaultReloadInterval,
		Version:              "dev",
	}
}

// noteLimitFlags name the flag of each field of etcdnotes.LimitError.
var noteLimitFlags = map[string]string{
	"PerLocation":  "max-notes-per-location",
	"MessageBytes": "max-note-bytes",
	"AnswerBytes":  "max-chat-answer-bytes",
}

// Validate reports the first problem with c, naming the flag that sets it.
func (c Config) Validate() error {
	var first error
	check := func(ok bool, flag, format string, args ...any) {
		if !ok && first == nil {
			first = fmt.Errorf("--%s: %s", flag, fmt.Sprintf(format, args...))
		}
	}
	check(discovery.CheckAddr(c.Listen, discovery.ListenAddr) == nil, "listen", "%q is not a host:port address", c.Listen)
	check(c.Advertise == "" || discovery.CheckAddr(c.Advertise, discovery.DialAddr) == nil, "advertise", "%q is not a host:port address with a host and a port", c.Advertise)
	if c.AdvertiseNetwork != "" {
		_, err := discovery.ParseNetwork(c.AdvertiseNetwork)
		check(err == nil, "advertise-network", "%v", err)
	}
	check(c.MetricsListen == "" || discovery.CheckAddr(c.MetricsListen, discovery.ListenAddr) == nil, "metrics-listen", "%q is not a host:port address", c.MetricsListen)
	check(!c.DebugEndpoints || c.MetricsListen != "", "debug-endpoints", "needs --metrics-listen, where they are served")
	check(c.Service != "" && !strings.Contains(c.Service, "/"), "service", "%q must be non-empty and without '/'", c.Service)
	check(!strings.Contains(c.NodeID, "/"), "node-id", "%q must not contain '/'", c.NodeID)
	check(c.LeaseTTL >= time.Second, "lease-ttl", "%v is shorter than etcd's minimum of 1s", c.LeaseTTL)
	check(c.LeaseTTL%time.Second == 0, "lease-ttl", "%v is not a whole number of seconds, as etcd leases are", c.LeaseTTL)
	check(c.DrainDelay >= 0, "drain-delay", "%v is negative", c.DrainDelay)
	check(c.ShutdownTimeout > 0, "shutdown-timeout", "%v must be positive", c.ShutdownTimeout)
	check(c.MaxMessageBytes >= 1024, "max-msg-size", "%d is below the 1024 bytes a request may need", c.MaxMessageBytes)
	check(c.Limits.RoutePoints >= 0, "max-route-points", "%d is negative", c.Limits.RoutePoints)
	check(c.Limits.ChatNotes >= 0, "max-chat-notes", "%d is negative", c.Limits.ChatNotes)
	check(c.NoteLimits.PerLocation > 0 || len(c.Etcd) == 0, "max-notes-per-location", "must be at least 1 with --etcd: a cluster's notes live in etcd and need a bound")
	check(c.NoteLimits.Bytes >= 0, "max-notes-bytes", "%d is negative", c.NoteLimits.Bytes)
	limits := c.NoteLimits
	if limits.PerLocation == 0 && len(c.Etcd) == 0 {
		limits.PerLocation = 1 // a standalone node's 0 is no bound, in memory
	}
	var bad *etcdnotes.LimitError
	if errors.As(etcdnotes.CheckLimits(limits), &bad) {
		check(false, noteLimitFlags[bad.Field], "%s", bad.Problem)
	}
	check(c.NoteMaxAge >= time.Second, "notes-max-age", "%v is shorter than 1s; etcd leases count whole seconds", c.NoteMaxAge)
	check(c.NotesBudget > 0, "notes-budget", "%d must be positive", c.NotesBudget)
	check(c.NotesCacheBytes >= 0, "notes-cache-bytes", "%d is negative", c.NotesCacheBytes)
	check(c.NotesWriteRate >= 1, "notes-write-rate", "%d must be at least 1", c.NotesWriteRate)
	check(len(c.NotesEtcd) == 0 || len(c.Etcd) > 0, "notes-etcd", "needs --etcd: a standalone node keeps its notes in memory")
	check(c.Limits.NoteWrites >= 1, "max-note-writes", "%d must be at least 1", c.Limits.NoteWrites)
	check(c.Limits.NoteWriteWait > 0, "note-write-wait", "%v must be positive", c.Limits.NoteWriteWait)
	check(c.Limits.AnswerWait > 0, "chat-answer-wait", "%v must be positive", c.Limits.AnswerWait)
	check(c.MaxConcurrentStreams >= 1 && c.MaxConcurrentStreams <= math.MaxInt32, "max-concurrent-streams", "%d is not between 1 and %d", c.MaxConcurrentStreams, math.MaxInt32)
	if first == nil {
		first = tracing.CheckEndpoint(c.OTLPEndpoint)
	}
	if first == nil {
		first = c.TLS.Validate(tlsfiles.GRPCFlags)
	}
	if first == nil {
		first = tlsfiles.CheckReloadInterval(c.TLSReloadInterval)
	}
	if first == nil {
		first = c.EtcdAuth.ValidateFor(c.Etcd)
	}
	return first
}
