// Package routeguide implements the RouteGuide gRPC service with the canonical
// semantics, over a feature database and a note store. It knows nothing of
// etcd, Prometheus or the node that serves it.
package routeguide

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/routeguide/contract"
	"github.com/routeguide-cluster/routeguide/routeguide/features"
	"github.com/routeguide-cluster/routeguide/routeguide/notes"
)

// Limits bound what one stream may send, so that no client can make the
// server hold unbounded state. A value <= 0 means no bound.
type Limits struct {
	// RoutePoints is the number of points one RecordRoute stream may send.
	RoutePoints int
	// ChatNotes is the number of notes one RouteChat stream may send.
	ChatNotes int
	// NoteWrites bounds the notes the server posts and answers at once, over
	// all streams; one client group (an IPv4 address, an IPv6 /64) may take
	// a quarter of them, and less while more groups post (see writeGate). A
	// note holds its place until its answer is sent, so what unread answers
	// hold is bounded too: NoteWrites answers of the store's AnswerBytes.
	NoteWrites int
	// NoteWriteWait is how long a note waits for a place before it is
	// refused with ResourceExhausted.
	NoteWriteWait time.Duration
	// AnswerWait is how long the client may take to read an answer: past
	// it the stream ends with DeadlineExceeded and the place is given back.
	// The note stays stored.
	AnswerWait time.Duration
}

// The limits a request can reach, by the names Observer.LimitRejected
// hears and metrics label them with.
const (
	LimitRoutePoints = "route_points"
	LimitChatNotes   = "chat_notes"
	LimitStoredNotes = "stored_notes"
	LimitNoteBytes   = "note_bytes"
	LimitNoteWrites  = "note_writes"
	LimitNoteRate    = "note_rate"
	LimitAnswerWait  = "answer_wait"
)

// LimitNames lists every limit name, for metrics that start each at zero.
var LimitNames = []string{LimitRoutePoints, LimitChatNotes, LimitStoredNotes, LimitNoteBytes, LimitNoteWrites, LimitNoteRate, LimitAnswerWait}

// Observer hears what the service does, for metrics. Its methods are called
// on the request path and must be cheap and safe for concurrent use.
type Observer interface {
	// RouteRecorded is called for every route summarised by RecordRoute.
	RouteRecorded(summary *pb.RouteSummary)
	// NotePosted is called for every note stored by RouteChat.
	NotePosted()
	// LimitRejected is called when a request is refused because a limit, named
	// by a short stable word such as "route_points", is reached.
	LimitRejected(limit string)
}

// Config holds what a Server serves from.
type Config struct {
	Features *features.DB // required
	Notes    notes.Store  // required
	Limits   Limits
	Observer Observer // optional
}

// Server implements pb.RouteGuideServer.
type Server struct {
	pb.UnimplementedRouteGuideServer
	features *features.DB
	notes    notes.Store
	limits   Limits
	observer Observer
	writes   *writeGate
}

// NewServer returns a Server for cfg.
func NewServer(cfg Config) *Server {
	observer := cfg.Observer
	if observer == nil {
		observer = nopObserver{}
	}
	return &Server{features: cfg.Features, notes: cfg.Notes, limits: cfg.Limits, observer: observer,
		writes: newWriteGate(cfg.Limits.NoteWrites, cfg.Limits.NoteWriteWait)}
}

// GetFeature returns the first feature in file order at exactly the point, or
// a Feature with an empty name and the requested location.
func (s *Server) GetFeature(_ context.Context, point *pb.Point) (*pb.Feature, error) {
	if err := checkPoint("point", point); err != nil {
		return nil, err
	}
	if f := s.features.At(point.Latitude, point.Longitude); f != nil {
		return f, nil
	}
	// One allocation for the answer and its location instead of two.
	miss := &unnamed{location: pb.Point{Latitude: point.Latitude, Longitude: point.Longitude}}
	miss.feature.Location = &miss.location
	return &miss.feature, nil
}

// unnamed is the answer for a point without a feature, allocated as one.
type unnamed struct {
	feature  pb.Feature
	location pb.Point
}

// ListFeatures streams, in file order, every feature inside the rectangle,
// edges included, with its corners in any order.
func (s *Server) ListFeatures(rect *pb.Rectangle, stream pb.RouteGuide_ListFeaturesServer) error {
	// The canonical server dereferences both corners and crashes on a missing one.
	if err := checkPoint("rectangle.lo", rect.Lo); err != nil {
		return err
	}
	if err := checkPoint("rectangle.hi", rect.Hi); err != nil {
		return err
	}
	for f := range s.features.Within(features.RectBetween(rect.Lo, rect.Hi)) {
		if err := stream.Send(f); err != nil {
			return err
		}
	}
	return nil
}

// RecordRoute sums up the route the client streams: how many points, how many
// known features on them (every feature at a point counts), the haversine
// distance with each leg truncated to whole metres, and the whole seconds it
// took.
func (s *Server) RecordRoute(stream pb.RouteGuide_RecordRouteServer) error {
	start := time.Now()
	var points, featuresPassed, distance int64
	var last *pb.Point
	for {
		point, err := stream.Recv()
		if err == io.EOF {
			summary := &pb.RouteSummary{
				PointCount:   saturate(points),
				FeatureCount: saturate(featuresPassed),
				Distance:     saturate(distance),
				ElapsedTime:  saturate(int64(time.Since(start) / time.Second)),
			}
			s.observer.RouteRecorded(summary)
			return stream.SendAndClose(summary)
		}
		if err != nil {
			return err
		}
		if err := checkPoint("point", point); err != nil {
			return status.Errorf(codes.InvalidArgument, "route point %d: %s", points, status.Convert(err).Message())
		}
		if s.limits.RoutePoints > 0 && points >= int64(s.limits.RoutePoints) {
			s.observer.LimitRejected(LimitRoutePoints)
			return status.Errorf(codes.ResourceExhausted, "a route may have at most %d points", s.limits.RoutePoints)
		}
		points++
		featuresPassed += int64(s.features.CountAt(point.Latitude, point.Longitude))
		if last != nil {
			distance += int64(legDistance(last, point))
		}
		last = point
	}
}

// RouteChat stores every note it receives and answers each with all the notes
// at that location, in posting order, the new one included.
func (s *Server) RouteChat(stream pb.RouteGuide_RouteChatServer) error {
	noteID, err := streamNoteID(stream.Context())
	if err != nil {
		return err
	}
	for received := 0; ; received++ {
		note, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := checkPoint("location", note.Location); err != nil {
			return status.Errorf(codes.InvalidArgument, "note %d: %s", received, status.Convert(err).Message())
		}
		// Protobuf strings are UTF-8; a codec that lets other bytes through
		// (the node's does) leaves the check here, with the caller's status.
		if !utf8.ValidString(note.Message) {
			return status.Errorf(codes.InvalidArgument, "note %d: the message is not valid UTF-8", received)
		}
		if s.limits.ChatNotes > 0 && received >= s.limits.ChatNotes {
			s.observer.LimitRejected(LimitChatNotes)
			return status.Errorf(codes.ResourceExhausted, "a chat may send at most %d notes", s.limits.ChatNotes)
		}
		ctx := stream.Context()
		if noteID != "" {
			ctx = notes.WithNoteID(ctx, fmt.Sprintf("%s.%d", noteID, received))
		}
		if err := s.postAndAnswer(ctx, stream, note); err != nil {
			return err
		}
	}
}

// postAndAnswer stores note and sends the notes at its location, holding a
// place in the write gate until the answer is sent.
func (s *Server) postAndAnswer(ctx context.Context, stream pb.RouteGuide_RouteChatServer, note *pb.RouteNote) error {
	leave, err := s.writes.enter(ctx)
	if errors.Is(err, errGateFull) {
		s.observer.LimitRejected(LimitNoteWrites)
		return status.Errorf(codes.ResourceExhausted, "the node posts %d notes at once at most, a client address a quarter of them or less while more post; none was free within %v", s.limits.NoteWrites, s.limits.NoteWriteWait)
	}
	if err != nil {
		return status.FromContextError(err).Err()
	}
	defer leave()
	atLocation, err := s.notes.Post(ctx, note)
	if err != nil {
		return s.postError(err)
	}
	s.observer.NotePosted()
	return s.sendAnswer(stream, atLocation)
}

// sendAnswer sends the notes of an answer, and ends the stream with
// DeadlineExceeded when the client has not read them within AnswerWait: a
// Send blocked by flow control ends only with its stream, so it runs in a
// goroutine of its own, which returns once the handler has returned.
func (s *Server) sendAnswer(stream pb.RouteGuide_RouteChatServer, answer []*pb.RouteNote) error {
	send := func() error {
		for _, n := range answer {
			if err := stream.Send(n); err != nil {
				return err
			}
		}
		return nil
	}
	if s.limits.AnswerWait <= 0 {
		return send()
	}
	sent := make(chan error, 1)
	go func() { sent <- send() }()
	timer := time.NewTimer(s.limits.AnswerWait)
	defer timer.Stop()
	select {
	case err := <-sent:
		return err
	case <-timer.C:
		s.observer.LimitRejected(LimitAnswerWait)
		return status.Errorf(codes.DeadlineExceeded, "the answer of %d notes was not read within %v; the note is stored", len(answer), s.limits.AnswerWait)
	}
}

// streamNoteID is the stream's contract.NoteIDHeader, checked.
func streamNoteID(ctx context.Context) (string, error) {
	ids := metadata.ValueFromIncomingContext(ctx, contract.NoteIDHeader)
	if len(ids) == 0 {
		return "", nil
	}
	id := ids[0]
	if len(ids) > 1 || id == "" || len(id) > contract.MaxNoteIDBytes || strings.IndexFunc(id, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-')
	}) >= 0 {
		return "", status.Errorf(codes.InvalidArgument, "%s must be one value of 1 to %d letters, digits, '.', '_' or '-'", contract.NoteIDHeader, contract.MaxNoteIDBytes)
	}
	return id, nil
}

// postError turns a note store's error into a status for the client.
func (s *Server) postError(err error) error {
	switch {
	case errors.Is(err, notes.ErrNoteTooLarge):
		s.observer.LimitRejected(LimitNoteBytes)
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, notes.ErrWriteRate):
		s.observer.LimitRejected(LimitNoteRate)
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, notes.ErrLimit):
		s.observer.LimitRejected(LimitStoredNotes)
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, notes.ErrUnavailable):
		// Before the context errors: a store that gave up after its own
		// timeout may wrap DeadlineExceeded while the client still waits.
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	default:
		return status.Errorf(codes.Unavailable, "store note: %v", err)
	}
}

// checkPoint answers InvalidArgument for a missing point or one off the globe.
func checkPoint(field string, p *pb.Point) error {
	if p == nil {
		return status.Errorf(codes.InvalidArgument, "%s is missing", field)
	}
	if err := features.CheckCoordinates(p.Latitude, p.Longitude); err != nil {
		return status.Errorf(codes.InvalidArgument, "%s: %v (coordinates are degrees x 10^7)", field, err)
	}
	return nil
}

// earthRadius is the mean radius of the Earth in metres, as the canonical
// implementations use it.
const earthRadius = 6371000

// legDistance is the haversine distance between two points, truncated to
// whole metres as the canonical servers do for each leg.
func legDistance(from, to *pb.Point) int32 {
	const e7ToRadians = math.Pi / 180 / 1e7
	lat1 := float64(from.Latitude) * e7ToRadians
	lat2 := float64(to.Latitude) * e7ToRadians
	dLat := lat2 - lat1
	dLon := (float64(to.Longitude) - float64(from.Longitude)) * e7ToRadians
	a := math.Sin(dLat/2)*math.Sin(dLat/2) + math.Cos(lat1)*math.Cos(lat2)*math.Sin(dLon/2)*math.Sin(dLon/2)
	// For some antipodes a rounds to just above 1, where sqrt(1-a) is NaN and
	// the leg would convert to -2^31 metres (the canonical servers have this bug).
	a = min(a, 1)
	c := 2 * math.Atan2(math.Sqrt(a), math.Sqrt(1-a))
	return int32(earthRadius * c)
}

// saturate converts a total to the int32 that the summary carries. A long
// enough route overflows int32 metres (about 107 legs of half the globe); it
// then reads as the largest value instead of wrapping to a negative one.
func saturate(v int64) int32 {
	if v > math.MaxInt32 {
		return math.MaxInt32
	}
	return int32(v)
}

type nopObserver struct{}

func (nopObserver) RouteRecorded(*pb.RouteSummary) {}
func (nopObserver) NotePosted()                    {}
func (nopObserver) LimitRejected(string)           {}
