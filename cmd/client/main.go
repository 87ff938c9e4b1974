// Command client talks to a RouteGuide cluster: one call at a time (get,
// list, record, chat), the canonical tour, or load with a summary. Run
// "client help" for the commands; SIGINT or SIGTERM stop it, and a load run
// still prints its summary.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/routeguide-cluster/routeguide/internal/clientcli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := clientcli.Main(ctx, os.Args[1:], clientcli.IO{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}, os.LookupEnv)
	stop()
	os.Exit(code)
}
