// Package clustertest holds the cluster's tests, and nothing else: nodes
// over a real etcd, as processes of the node command (which TestMain
// builds) and in this process (package devcluster), under load, faults,
// attacks and certificate rotation, with real clients of other languages
// and a real Prometheus. A reader finds here what the cluster promises and
// the proof; the tests of one package stay beside it.
package clustertest
