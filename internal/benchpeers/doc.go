// Package benchpeers measures our cluster side by side with the same
// RouteGuide service built the idiomatic way on go-zero (zrpc with its etcd
// discovery) and on plain grpc-go (etcd's naming resolver and round_robin),
// three node processes each, under the same load. It is a
// module of its own so that go-zero's dependencies never enter the main
// module; its tests are the benchmark, and docs/BENCHMARKS.md ("Peers") has
// the commands and figures.
package benchpeers
