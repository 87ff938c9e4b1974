// Package discovery registers gRPC nodes in etcd and resolves etcd:///<service>
// targets for gRPC clients, in the registry format of etcd's
// client/v3/naming/endpoints package: a node is the key <service>/<node id>
// holding {"Op":0,"Addr":"host:port","Metadata":{...}} under a lease. Tools
// that read or write that format, etcd's own resolver among them, interoperate
// with ours; the tests pin both directions.
//
// Registration (Registrar) keeps a lease alive with etcd's concurrency package
// and writes the key in a transaction that never overwrites another live node.
// Whatever happens to the lease or the key, it registers again, with backoff
// and full jitter, for as long as it runs.
//
// Resolution (Builder) does not wrap etcd's resolver, nor build on
// endpoints.NewWatchChannel, because the gaps are in the watch loop that both
// share. That loop lists with a serializable read, which a lagging member may
// answer from stale data; watches without WithRequireLeader, so a member cut
// off from its cluster keeps serving an outdated view; ends for good on the
// first watch error (ErrCompacted after a disconnection, say), after which
// the resolver's goroutine returns and ResolveNow does nothing, so the client
// never learns of another node; ignores a malformed value written over a
// valid one, so calls keep going to the old address; and sends nothing when
// no node is registered, so calls wait for their deadline. Our follower lists
// with a linearizable read and watches with WithRequireLeader, lists and
// watches again after any failure while the ClientConn lives (keeping the
// last known endpoints meanwhile), drops and counts malformed values, and hands
// gRPC an empty list when there is no node.
// TestResolverFollowsAgainAfterCutOffAndCompaction shows the upstream
// resolver stuck in the same setup where ours follows.
//
// View follows the registry the same way for readers that are not gRPC, such
// as a node's /sd endpoint for Prometheus.
package discovery
