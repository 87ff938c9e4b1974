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
// Resolution (Builder) does not wrap etcd's resolver: the watch loop it
// shares with endpoints.NewWatchChannel ends for good on its first error and
// sends nothing when no node is registered, among other gaps. docs/DESIGN.md
// lists them, and what our follower does instead. An entry without a lease
// is not a node: the follower skips and counts it unless WithUnleasedEntries.
//
// View follows the registry the same way for readers that are not gRPC, such
// as a node's /sd endpoint for Prometheus.
package discovery
