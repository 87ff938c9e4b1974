// Package discovery registers gRPC nodes in etcd and resolves etcd:///<service>
// targets for gRPC clients, in the registry format of etcd's
// client/v3/naming/endpoints package, so that etcd's own resolver and ours
// interoperate.
//
// Registration (Registrar) keeps a lease alive and registers again after any
// loss; resolution (Builder) follows the registry where etcd's resolver stops;
// View follows it for readers that are not gRPC, such as /sd. See
// docs/DESIGN.md, "Registration and the registry format" and "Discovery: why
// not etcd's resolver as it is".
package discovery
