package clientcli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/routeguide-cluster/routeguide/internal/flagenv"
	"github.com/routeguide-cluster/routeguide/internal/load"
)

// defaultLoadDuration is how long load runs when neither --duration nor
// --requests is given.
const defaultLoadDuration = 10 * time.Second

// errRPCsFailed says that load ran and some calls failed; the summary has
// said which.
var errRPCsFailed = errors.New("some RPCs failed")

// registerLoad adds the load flags, which set cfg, to fs.
func registerLoad(fs *flag.FlagSet, cfg *load.Config) {
	if cfg.RPC == "" {
		cfg.RPC = load.Get
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 8
	}
	fs.Var(&cfg.RPC, "rpc", "`call` to make: get, list, record, chat or mix")
	fs.IntVar(&cfg.Concurrency, "concurrency", cfg.Concurrency, "`workers`, each with one call in flight (with --rps, the most calls in flight)")
	fs.Float64Var(&cfg.Rate, "rps", cfg.Rate, "open loop: start `calls` per second whatever their latency, which counts from when each was due (0: closed loop, each worker calls again when its call ends)")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "how long to run (10s when --requests is not given either)")
	fs.IntVar(&cfg.Requests, "requests", cfg.Requests, "`N` calls to make in all, instead of --duration")
}

func (c *cli) load(ctx context.Context, args []string) error {
	cfg := load.Config{Timeout: c.cfg.Timeout}
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	registerLoad(fs, &cfg)
	if err := flagenv.Parse(fs, args, c.lookupEnv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	for _, name := range []string{"duration", "requests"} {
		if flagenv.Given(fs, name, c.lookupEnv) && fs.Lookup(name).Value.String() == fs.Lookup(name).DefValue {
			return usagef("--%s: must be positive", name)
		}
	}
	if cfg.Duration == 0 && cfg.Requests == 0 {
		cfg.Duration = defaultLoadDuration
	}
	if err := cfg.Validate(); err != nil {
		return usageError{err}
	}

	bar := c.progressBar()
	if bar != nil || c.onProgress != nil {
		cfg.Progress = func(p load.Progress) {
			if bar != nil {
				bar.draw(p)
			}
			if c.onProgress != nil {
				c.onProgress(p)
			}
		}
	}
	conn, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	res, err := load.Run(ctx, conn, cfg)
	if err != nil {
		return usageError{err}
	}
	if bar != nil {
		bar.finish()
	}
	if ctx.Err() != nil {
		fmt.Fprintln(c.io.Stderr, "client load: interrupted; the summary covers the calls that finished")
	}
	if c.cfg.JSON {
		err = c.printJSON(res)
	} else {
		err = writeSummary(c.io.Stdout, res, cfg.Rate)
	}
	if err != nil {
		return err
	}
	if res.Failed > 0 {
		return errRPCsFailed
	}
	return nil
}

// writeSummary writes the result of a load run for people; rate is the
// open-loop rate it was asked for, or 0.
func writeSummary(w io.Writer, res load.Result, rate float64) error {
	var b strings.Builder
	fmt.Fprintf(&b, "ok        %d\n", res.OK)
	fmt.Fprintf(&b, "failed    %d", res.Failed)
	if len(res.Errors) > 0 {
		var byCode []string
		for _, code := range slices.Sorted(maps.Keys(res.Errors)) {
			byCode = append(byCode, fmt.Sprintf("%s %d", code, res.Errors[code]))
		}
		fmt.Fprintf(&b, " (%s)", strings.Join(byCode, ", "))
	}
	fmt.Fprintf(&b, "\nqps       %.1f over %v\n", res.QPS, res.Elapsed.Round(time.Millisecond))
	fmt.Fprintf(&b, "latency   p50 %s  p90 %s  p99 %s  p99.9 %s (of the calls that succeeded",
		milliseconds(res.P50), milliseconds(res.P90), milliseconds(res.P99), milliseconds(res.P999))
	if rate > 0 {
		fmt.Fprintf(&b, ", from when each was due)\nschedule  %g calls/s asked; %d started over %v late, %d never started\n",
			rate, res.Late, load.LateAfter, res.Unsent)
	} else {
		b.WriteString(")\n")
	}
	b.WriteString("by node  ")
	if len(res.ByNode) == 0 {
		b.WriteString(" none answered")
	}
	total := 0
	for _, n := range res.ByNode {
		total += n
	}
	for _, node := range slices.Sorted(maps.Keys(res.ByNode)) {
		n := res.ByNode[node]
		fmt.Fprintf(&b, " %s %d (%.1f%%)", node, n, 100*float64(n)/float64(total))
	}
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func milliseconds(d time.Duration) string {
	return fmt.Sprintf("%.3fms", float64(d)/float64(time.Millisecond))
}

// progressBar returns a bar on stderr when stderr is a terminal, or nil.
func (c *cli) progressBar() *progressBar {
	if !isTerminal(c.io.Stderr) {
		return nil
	}
	return &progressBar{w: c.io.Stderr}
}

// isTerminal reports whether f, a reader or writer of IO, is a terminal.
func isTerminal(f any) bool {
	file, ok := f.(interface{ Fd() uintptr })
	return ok && term.IsTerminal(int(file.Fd()))
}

// progressBar redraws one line: how far the run is, ok, failed and the
// current rate.
type progressBar struct {
	w     io.Writer
	drawn bool
}

const barWidth = 30

func (b *progressBar) draw(p load.Progress) {
	var fraction float64
	var done string
	if p.Requests > 0 {
		fraction = float64(p.Done) / float64(p.Requests)
		done = fmt.Sprintf("%d/%d", p.Done, p.Requests)
	} else {
		fraction = float64(p.Elapsed) / float64(p.Duration)
		done = fmt.Sprintf("%v/%v", p.Elapsed.Round(100*time.Millisecond), p.Duration)
	}
	filled := int(min(max(fraction, 0), 1) * barWidth)
	fmt.Fprintf(b.w, "\r\x1b[K[%s%s] %s  ok %d  failed %d  %.0f qps",
		strings.Repeat("#", filled), strings.Repeat(".", barWidth-filled), done, p.OK, p.Failed, p.QPS)
	b.drawn = true
}

// finish ends the bar's line, so that what follows starts on its own.
func (b *progressBar) finish() {
	if b.drawn {
		fmt.Fprintln(b.w)
	}
}
