package load

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/routeguide/features"
)

// RPC names the call a load run makes. It is a flag.Value.
type RPC string

// The calls a run can make. Points are those of the built-in features
// (features.Default), so every get finds a feature and every route passes
// features.
const (
	// Get is GetFeature at the point of a random known feature.
	Get RPC = "get"
	// List is ListFeatures over a box 0.2 degrees on each side around a random
	// known feature, read to the end.
	List RPC = "list"
	// Record is RecordRoute of RoutePoints random known feature points.
	Record RPC = "record"
	// Chat is RouteChat: ChatNotes notes at random points of the globe, then
	// every answer read. The points are random so that notes rarely share a
	// location and answers stay one note each; a node keeps every note, so a
	// long chat run ends up filling its store (ResourceExhausted).
	Chat RPC = "chat"
	// Mix picks for each call: 70% get, 10% list, 10% record, 10% chat.
	Mix RPC = "mix"
)

// What one record or chat call sends.
const (
	RoutePoints = 10
	ChatNotes   = 3
)

// listHalfSpan is half the side of the box a list call asks for: 0.1 degree.
const listHalfSpan = 1_000_000

var allRPCs = []RPC{Get, List, Record, Chat, Mix}

func (r RPC) valid() bool {
	for _, known := range allRPCs {
		if r == known {
			return true
		}
	}
	return false
}

func rpcNames() string {
	names := make([]string, len(allRPCs))
	for i, r := range allRPCs {
		names[i] = string(r)
	}
	return strings.Join(names, ", ")
}

// String implements flag.Value.
func (r RPC) String() string { return string(r) }

// Set implements flag.Value.
func (r *RPC) Set(s string) error {
	if !RPC(s).valid() {
		return fmt.Errorf("want one of %s", rpcNames())
	}
	*r = RPC(s)
	return nil
}

// worker makes one call at a time and keeps its own counts, so that workers
// share nothing on the hot path but the ticket counter.
type worker struct {
	client  pb.RouteGuideClient
	rpc     RPC
	timeout time.Duration
	points  []*pb.Point
	rng     *rand.Rand

	// The header and trailer of the last call, filled in by opts.
	header, trailer metadata.MD
	opts            []grpc.CallOption

	// Messages reused from call to call: gRPC is done with a request once
	// Send or the unary call returns, and RecvMsg overwrites a response.
	lo, hi   pb.Point
	rect     pb.Rectangle
	noteAt   pb.Point
	note     pb.RouteNote
	feature  pb.Feature
	received pb.RouteNote
	summary  pb.RouteSummary

	// Read by the progress reporter while the run goes on.
	okCount, failedCount atomic.Int64

	// Read only once the worker has stopped.
	latencies  []time.Duration // of calls that succeeded
	started    int             // calls made, whether they were counted or cut short
	late       int             // open-loop calls that started over LateAfter after they were due
	codes      [numCodes]int   // failures by code
	otherCodes map[codes.Code]int
	byNode     map[string]int
}

// numCodes covers the codes gRPC defines, OK (0) to Unauthenticated (16).
const numCodes = int(codes.Unauthenticated) + 1

func newWorker(client pb.RouteGuideClient, cfg Config, points []*pb.Point, rng *rand.Rand) *worker {
	w := &worker{
		client:     client,
		rpc:        cfg.RPC,
		timeout:    cfg.Timeout,
		points:     points,
		rng:        rng,
		otherCodes: map[codes.Code]int{},
		byNode:     map[string]int{},
	}
	w.opts = []grpc.CallOption{grpc.Header(&w.header), grpc.Trailer(&w.trailer)}
	w.rect.Lo, w.rect.Hi = &w.lo, &w.hi
	w.note.Location = &w.noteAt
	w.note.Message = "load"
	size := 4096
	if cfg.Requests > 0 {
		size = cfg.Requests/cfg.Concurrency + 1
	}
	w.latencies = make([]time.Duration, 0, size)
	return w
}

// run makes calls until stop ends or the tickets run out. Each call runs
// under calls with its own deadline; a call cut short because ctx ended is
// not counted.
func (w *worker) run(ctx, calls, stop context.Context, t *tickets) {
	var wait *time.Timer
	defer func() {
		if wait != nil {
			wait.Stop()
		}
	}()
	for stop.Err() == nil {
		due, ok := t.take()
		if !ok {
			return
		}
		begin := time.Now()
		if !due.IsZero() {
			if early := due.Sub(begin); early > 0 {
				if wait == nil {
					wait = time.NewTimer(early)
				} else {
					wait.Reset(early)
				}
				select {
				case <-wait.C:
				case <-stop.Done():
					return // due after the end: never sent
				}
				begin = time.Now()
			}
			if begin.Sub(due) > LateAfter {
				w.late++
			}
			// Latency counts from when the call was due: waiting for a
			// worker is part of what a caller at this rate would see.
			begin = due
		}
		callCtx, cancel := context.WithTimeout(calls, w.timeout)
		// A call that never reaches a server leaves both untouched.
		w.header, w.trailer = nil, nil
		w.started++
		err := w.call(callCtx, w.pick())
		took := time.Since(begin)
		cancel()
		if err != nil && ctx.Err() != nil {
			return // cut short by the end of the run, not failed
		}
		w.count(err, took)
	}
}

func (w *worker) count(err error, took time.Duration) {
	if code := status.Code(err); code == codes.OK {
		w.latencies = append(w.latencies, took)
		w.okCount.Add(1)
	} else {
		if int(code) < numCodes {
			w.codes[code]++
		} else {
			w.otherCodes[code]++
		}
		w.failedCount.Add(1)
	}
	if node := NodeOf(w.header, w.trailer); node != "" {
		w.byNode[node]++
	}
}

func (w *worker) pick() RPC {
	if w.rpc != Mix {
		return w.rpc
	}
	switch n := w.rng.IntN(100); {
	case n < 70:
		return Get
	case n < 80:
		return List
	case n < 90:
		return Record
	default:
		return Chat
	}
}

func (w *worker) call(ctx context.Context, rpc RPC) error {
	switch rpc {
	case Get:
		return w.get(ctx)
	case List:
		return w.list(ctx)
	case Record:
		return w.record(ctx)
	default:
		return w.chat(ctx)
	}
}

func (w *worker) featurePoint() *pb.Point {
	return w.points[w.rng.IntN(len(w.points))]
}

func (w *worker) get(ctx context.Context) error {
	_, err := w.client.GetFeature(ctx, w.featurePoint(), w.opts...)
	return err
}

func (w *worker) list(ctx context.Context) error {
	c := w.featurePoint()
	w.lo.Latitude = max(c.Latitude-listHalfSpan, -features.MaxLatitude)
	w.lo.Longitude = max(c.Longitude-listHalfSpan, -features.MaxLongitude)
	w.hi.Latitude = min(c.Latitude+listHalfSpan, features.MaxLatitude)
	w.hi.Longitude = min(c.Longitude+listHalfSpan, features.MaxLongitude)
	stream, err := w.client.ListFeatures(ctx, &w.rect, w.opts...)
	if err != nil {
		return err
	}
	return drain(stream, &w.feature)
}

func (w *worker) record(ctx context.Context) error {
	stream, err := w.client.RecordRoute(ctx, w.opts...)
	if err != nil {
		return err
	}
	for range RoutePoints {
		// A failed Send means the stream is over; RecvMsg says why.
		if err := stream.Send(w.featurePoint()); err != nil {
			break
		}
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	return stream.RecvMsg(&w.summary)
}

func (w *worker) chat(ctx context.Context) error {
	stream, err := w.client.RouteChat(ctx, w.opts...)
	if err != nil {
		return err
	}
	for range ChatNotes {
		w.noteAt.Latitude = int32(w.rng.Int64N(2*features.MaxLatitude+1) - features.MaxLatitude)
		w.noteAt.Longitude = int32(w.rng.Int64N(2*features.MaxLongitude+1) - features.MaxLongitude)
		if err := stream.Send(&w.note); err != nil {
			break
		}
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	return drain(stream, &w.received)
}

// drain reads a stream's responses into m until the stream ends, and returns
// nil when it ended with OK.
func drain(stream grpc.ClientStream, m any) error {
	for {
		if err := stream.RecvMsg(m); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}
