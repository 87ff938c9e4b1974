package node

import (
	"flag"

	"github.com/routeguide-cluster/routeguide/internal/flagenv"
	"github.com/routeguide-cluster/routeguide/internal/tlsfiles"
	"github.com/routeguide-cluster/routeguide/internal/tracing"
)

// Register adds the flags that set c to fs, with c's values as their
// defaults: those of the node, of its gRPC TLS and of its etcd credentials.
func (c *Config) Register(fs *flag.FlagSet) {
	fs.StringVar(&c.Listen, "listen", c.Listen, "gRPC listen `address`")
	fs.StringVar(&c.Advertise, "advertise", c.Advertise, "`host:port` registered in etcd (default: derived from --listen)")
	fs.StringVar(&c.AdvertiseNetwork, "advertise-network", c.AdvertiseNetwork, "`CIDR` of the network to advertise on: the host's address inside it (default: the host's only network; see docs/OPERATIONS.md)")
	fs.Var((*flagenv.List)(&c.Etcd), "etcd", "comma-separated etcd `endpoints`; empty serves standalone, without registering")
	fs.StringVar(&c.Service, "service", c.Service, "service `name` to register under")
	fs.StringVar(&c.NodeID, "node-id", c.NodeID, "node `id` in etcd, logs and the routeguide-node header (default hostname:port)")
	fs.DurationVar(&c.LeaseTTL, "lease-ttl", c.LeaseTTL, "TTL of the etcd lease")
	fs.StringVar(&c.MetricsListen, "metrics-listen", c.MetricsListen, "metrics HTTP listen `address`; empty disables metrics")
	fs.BoolVar(&c.DebugEndpoints, "debug-endpoints", c.DebugEndpoints, "serve pprof (/debug/pprof/) and gRPC's channelz on the metrics listener")
	fs.StringVar(&c.FeaturesFile, "features", c.FeaturesFile, "features JSON `file` (default: the built-in data set)")
	fs.DurationVar(&c.DrainDelay, "drain-delay", c.DrainDelay, "how long a draining node keeps serving after leaving the registry")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "bound on the graceful stop; open calls are cut after it")
	fs.IntVar(&c.MaxMessageBytes, "max-msg-size", c.MaxMessageBytes, "largest message received or sent, in `bytes`")
	fs.IntVar(&c.Limits.RoutePoints, "max-route-points", c.Limits.RoutePoints, "points one RecordRoute may send; 0 for no bound")
	fs.IntVar(&c.Limits.ChatNotes, "max-chat-notes", c.Limits.ChatNotes, "notes one RouteChat may send; 0 for no bound")
	fs.IntVar(&c.NoteLimits.PerLocation, "max-notes-per-location", c.NoteLimits.PerLocation, "notes kept at one location, the oldest forgotten first; 0 for no bound when standalone")
	fs.Int64Var(&c.NoteLimits.Bytes, "max-notes-bytes", c.NoteLimits.Bytes, "memory all notes of a standalone node may take, in `bytes`; 0 for no bound")
	fs.IntVar(&c.NoteLimits.MessageBytes, "max-note-bytes", c.NoteLimits.MessageBytes, "largest message of one note, in `bytes`")
	fs.DurationVar(&c.NoteMaxAge, "notes-max-age", c.NoteMaxAge, "how long a cluster keeps a note in etcd")
	fs.IntVar(&c.NoteLimits.AnswerBytes, "max-chat-answer-bytes", c.NoteLimits.AnswerBytes, "most `bytes` of notes one RouteChat answer holds: the newest notes at the location that fit")
	fs.Var((*flagenv.List)(&c.NotesEtcd), "notes-etcd", "comma-separated `endpoints` of the etcd cluster that keeps the notes (default: --etcd's, on a connection of its own)")
	fs.Int64Var(&c.NotesCacheBytes, "notes-cache-bytes", c.NotesCacheBytes, "`bytes` of notes read from etcd that the node keeps, so that a post reads from etcd only the keys of its answer and the notes it has not seen; 0 keeps none")
	fs.IntVar(&c.NotesWriteRate, "notes-write-rate", c.NotesWriteRate, "notes per second the node writes to etcd at most; a post past it waits its turn, and gets RESOURCE_EXHAUSTED when its turn would come after its deadline or 5s")
	fs.Int64Var(&c.NotesBudget, "notes-budget", c.NotesBudget, "`bytes` of data the notes' etcd may hold while notes are posted; keep it well below etcd's --quota-backend-bytes")
	fs.IntVar(&c.Limits.NoteWrites, "max-note-writes", c.Limits.NoteWrites, "notes the node posts and answers at once; a client host may take a quarter")
	fs.DurationVar(&c.Limits.NoteWriteWait, "note-write-wait", c.Limits.NoteWriteWait, "how long a note waits for --max-note-writes before RESOURCE_EXHAUSTED")
	fs.DurationVar(&c.Limits.AnswerWait, "chat-answer-wait", c.Limits.AnswerWait, "how long a client may take to read a RouteChat answer before its stream ends with DEADLINE_EXCEEDED and gives back its --max-note-writes place")
	fs.IntVar(&c.MaxConcurrentStreams, "max-concurrent-streams", c.MaxConcurrentStreams, "calls one client connection may have open at once")
	fs.StringVar(&c.TLS.CertFile, tlsfiles.GRPCFlags+"-cert", c.TLS.CertFile, "serve gRPC over TLS with the certificate in this `file` (PEM), with --tls-key")
	fs.StringVar(&c.TLS.KeyFile, tlsfiles.GRPCFlags+"-key", c.TLS.KeyFile, "private key `file` (PEM) of --tls-cert")
	fs.StringVar(&c.TLS.ClientCAFile, tlsfiles.GRPCFlags+"-client-ca", c.TLS.ClientCAFile, "mutual TLS: refuse clients without a certificate signed by the CA in this `file` (PEM)")
	tlsfiles.RegisterReloadInterval(fs, &c.TLSReloadInterval)
	tracing.RegisterEndpoint(fs, &c.OTLPEndpoint)
	c.EtcdAuth.Register(fs)
}
