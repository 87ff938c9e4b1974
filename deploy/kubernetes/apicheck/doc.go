// Package apicheck checks deploy/kubernetes against a real kube-apiserver: a
// server-side dry run under strict validation, built from Kubernetes' Go
// modules with a real etcd behind it. It holds only tests; the module exists
// so that Kubernetes' dependencies stay out of routeguide's go.mod.
package apicheck
