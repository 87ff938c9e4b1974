// Package handler builds the RouteGuide service the peers' nodes serve: the
// same routeguide.Server a standalone node serves, with the node's default
// limits, the built-in features and notes in memory, so that the three
// clusters compared differ in their framework only.
package handler

import (
	"github.com/routeguide-cluster/routeguide/internal/node"
	"github.com/routeguide-cluster/routeguide/routeguide"
	"github.com/routeguide-cluster/routeguide/routeguide/features"
	"github.com/routeguide-cluster/routeguide/routeguide/notes"
)

// New returns the service as a standalone node builds it.
func New() *routeguide.Server {
	cfg := node.DefaultConfig()
	return routeguide.NewServer(routeguide.Config{
		Features: features.Default(),
		Notes:    notes.NewMemory(cfg.NoteLimits),
		Limits:   cfg.Limits,
	})
}
