// Package benchoutside measures the shipped node as users do: the node
// binary built from cmd/node beside grpc-go's example RouteGuide server, each
// a process of its own, loaded from outside by ghz and by our own
// `client load`. It is a module of its own so that ghz's and the example
// server's dependencies never enter the main module's go.mod (nor
// benchpeers', whose go-zero graph CI builds for other reasons); its tests
// are the benchmark and CI's guard, and docs/BENCHMARKS.md has the commands
// and figures.
package benchoutside
