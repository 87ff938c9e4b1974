// Command grpcloop is the in-process benchmark's client run as a process of
// its own: one grpc.NewClient with gRPC's defaults, -c goroutines each with
// one GetFeature in flight, the points of a features file in turn from a
// random start. It prints {"calls","failed","p50_ns","p99_ns"} as JSON.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
)

func main() {
	addr := flag.String("addr", "", "server `host:port`")
	workers := flag.Int("c", 16, "goroutines, each with one call in flight")
	d := flag.Duration("z", 3*time.Second, "how long to call")
	file := flag.String("points", "", "features JSON `file` whose points to ask for")
	flag.Parse()
	if err := run(*addr, *workers, *d, *file); err != nil {
		fmt.Fprintln(os.Stderr, "grpcloop:", err)
		os.Exit(1)
	}
}

func run(addr string, workers int, d time.Duration, file string) error {
	points, err := readPoints(file)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer conn.Close()
	client := pb.NewRouteGuideClient(conn)
	var failed atomic.Int64
	latencies := make([][]time.Duration, workers)
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := rand.IntN(len(points)); time.Now().Before(deadline); i++ {
				start := time.Now()
				if _, err := client.GetFeature(context.Background(), points[i%len(points)]); err != nil {
					failed.Add(1)
				}
				latencies[w] = append(latencies[w], time.Since(start))
			}
		})
	}
	wg.Wait()
	all := slices.Concat(latencies...)
	slices.Sort(all)
	if len(all) == 0 {
		return fmt.Errorf("no call made in %v", d)
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]int64{
		"calls": int64(len(all)), "failed": failed.Load(),
		"p50_ns": int64(all[len(all)/2]), "p99_ns": int64(all[len(all)*99/100]),
	})
}

func readPoints(file string) ([]*pb.Point, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read the points: %w", err)
	}
	var list []struct {
		Location struct{ Latitude, Longitude int32 }
	}
	if err := json.Unmarshal(data, &list); err != nil || len(list) == 0 {
		return nil, fmt.Errorf("read the points of %s: %v (%d points)", file, err, len(list))
	}
	points := make([]*pb.Point, len(list))
	for i, f := range list {
		points[i] = &pb.Point{Latitude: f.Location.Latitude, Longitude: f.Location.Longitude}
	}
	return points, nil
}
