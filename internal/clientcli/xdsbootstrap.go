package clientcli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"path/filepath"

	"github.com/routeguide-cluster/routeguide/discovery/xdsserver"
	"github.com/routeguide-cluster/routeguide/internal/flagenv"
)

// xdsBootstrap prints the xDS bootstrap of a cluster whose nodes (any of
// them serves xDS) are at the addresses given, so that nobody writes it by
// hand: over TLS when --tls-ca is set, with the client certificate of
// --tls-cert and --tls-key.
func (c *cli) xdsBootstrap(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("xds-bootstrap", flag.ContinueOnError)
	nodeID := fs.String("node-id", "routeguide-client", "`id` the client gives the xDS servers, for their logs")
	if err := flagenv.Parse(fs, args, c.lookupEnv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return usageError{err}
	}
	cfg := xdsserver.BootstrapConfig{Servers: fs.Args(), NodeID: *nodeID}
	if tls := c.cfg.TLS; tls.CAFile != "" {
		// The bootstrap is read from wherever the client runs.
		cfg.TLS = &xdsserver.BootstrapTLS{CAFile: absPath(tls.CAFile), CertFile: absPath(tls.CertFile), KeyFile: absPath(tls.KeyFile)}
	}
	out, err := xdsserver.Bootstrap(cfg)
	if err != nil {
		return usageError{err}
	}
	_, err = fmt.Fprintf(c.io.Stdout, "%s\n", out)
	return err
}

func absPath(path string) string {
	if path == "" {
		return ""
	}
	if abs, err := filepath.Abs(path); err == nil {
		return abs
	}
	return path
}
