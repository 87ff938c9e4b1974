package clientcli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/load"
	"github.com/routeguide-cluster/routeguide/routeguide/features"
)

// The JSON the commands print. Points are in E7, as in the protos and in
// features files.

type pointJSON struct {
	Latitude  int32 `json:"latitude"`
	Longitude int32 `json:"longitude"`
}

// featureJSON is a feature; found is false where nothing is known (the
// feature has an empty name).
type featureJSON struct {
	Name     string    `json:"name"`
	Location pointJSON `json:"location"`
	Found    bool      `json:"found"`
	Node     string    `json:"node"`
}

type noteJSON struct {
	Location pointJSON `json:"location"`
	Message  string    `json:"message"`
	Node     string    `json:"node"`
}

type summaryJSON struct {
	PointCount   int32  `json:"point_count"`
	FeatureCount int32  `json:"feature_count"`
	Distance     int32  `json:"distance"`
	ElapsedTime  int32  `json:"elapsed_time"`
	Node         string `json:"node"`
}

type tourJSON struct {
	Get    []featureJSON `json:"get"`
	List   []featureJSON `json:"list"`
	Record summaryJSON   `json:"record"`
	Chat   []noteJSON    `json:"chat"`
}

func toPointJSON(p *pb.Point) pointJSON {
	return pointJSON{Latitude: p.GetLatitude(), Longitude: p.GetLongitude()}
}

func toFeatureJSON(f *pb.Feature, node string) featureJSON {
	return featureJSON{Name: f.GetName(), Location: toPointJSON(f.GetLocation()), Found: f.GetName() != "", Node: node}
}

func toNoteJSON(n *pb.RouteNote, node string) noteJSON {
	return noteJSON{Location: toPointJSON(n.GetLocation()), Message: n.GetMessage(), Node: node}
}

func toSummaryJSON(s *pb.RouteSummary, node string) summaryJSON {
	return summaryJSON{
		PointCount: s.GetPointCount(), FeatureCount: s.GetFeatureCount(),
		Distance: s.GetDistance(), ElapsedTime: s.GetElapsedTime(), Node: node,
	}
}

// The text for people.

func featureText(f *pb.Feature) string {
	if f.GetName() == "" {
		return "no feature at " + formatPoint(f.GetLocation())
	}
	return f.GetName() + " " + formatPoint(f.GetLocation())
}

func listedFeatureText(f *pb.Feature) string {
	if f.GetName() == "" {
		return "(unnamed) " + formatPoint(f.GetLocation())
	}
	return featureText(f)
}

func noteText(n *pb.RouteNote) string {
	return formatPoint(n.GetLocation()) + " " + n.GetMessage()
}

func summaryText(s *pb.RouteSummary) string {
	return fmt.Sprintf("route of %d points passed %d features over %s in %d s",
		s.GetPointCount(), s.GetFeatureCount(), distanceText(s.GetDistance()), s.GetElapsedTime())
}

// distanceText is a distance in metres as a person reads it: metres below a
// kilometre, then kilometres, to 0.1 km below 100 km. JSON keeps the metres.
func distanceText(metres int32) string {
	switch km := float64(metres) / 1000; {
	case metres < 1000:
		return fmt.Sprintf("%d m", metres)
	case km < 100:
		return fmt.Sprintf("%.1f km", km)
	default:
		return fmt.Sprintf("%.0f km", km)
	}
}

func nodeText(node string) string {
	if node == "" {
		return ""
	}
	return " [node " + node + "]"
}

// printJSON writes v as one line of JSON.
func (c *cli) printJSON(v any) error {
	enc := json.NewEncoder(c.io.Stdout)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// call carries the header and trailer of one RPC, to say which node answered.
type call struct {
	header, trailer metadata.MD
}

func (c *call) opts() []grpc.CallOption {
	return []grpc.CallOption{grpc.Header(&c.header), grpc.Trailer(&c.trailer)}
}

func (c *call) node() string { return load.NodeOf(c.header, c.trailer) }

// rpcError says which RPC failed, with what status, on which node.
func rpcError(method string, err error, node string) error {
	st := status.Convert(err)
	return fmt.Errorf("%s: %s: %s%s", method, st.Code(), st.Message(), nodeText(node))
}

func (c *cli) get(ctx context.Context, args []string) error {
	if err := wantArgs(args, 2, "LAT LON"); err != nil {
		return err
	}
	point, err := parsePoint(args[0], args[1])
	if err != nil {
		return usageError{err}
	}
	conn, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	f, node, err := c.getFeature(ctx, pb.NewRouteGuideClient(conn), point)
	if err != nil {
		return err
	}
	if c.cfg.JSON {
		return c.printJSON(toFeatureJSON(f, node))
	}
	_, err = fmt.Fprintln(c.io.Stdout, featureText(f)+nodeText(node))
	return err
}

func (c *cli) getFeature(ctx context.Context, client pb.RouteGuideClient, point *pb.Point) (*pb.Feature, string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	var rpc call
	f, err := client.GetFeature(ctx, point, rpc.opts()...)
	if err != nil {
		return nil, rpc.node(), rpcError("GetFeature", err, rpc.node())
	}
	return f, rpc.node(), nil
}

func (c *cli) list(ctx context.Context, args []string) error {
	if err := wantArgs(args, 4, "LAT1 LON1 LAT2 LON2"); err != nil {
		return err
	}
	lo, err := parsePoint(args[0], args[1])
	if err != nil {
		return usageError{err}
	}
	hi, err := parsePoint(args[2], args[3])
	if err != nil {
		return usageError{err}
	}
	conn, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	var count int
	node, err := c.listFeatures(ctx, pb.NewRouteGuideClient(conn), &pb.Rectangle{Lo: lo, Hi: hi}, func(f *pb.Feature, node string) error {
		count++
		if c.cfg.JSON {
			return c.printJSON(toFeatureJSON(f, node))
		}
		_, err := fmt.Fprintln(c.io.Stdout, listedFeatureText(f))
		return err
	})
	if err != nil {
		return err
	}
	if !c.cfg.JSON {
		_, err = fmt.Fprintf(c.io.Stdout, "%d feature%s%s\n", count, plural(count), nodeText(node))
	}
	return err
}

// listFeatures hands each feature in rect to each as it arrives, with the
// node that sends it, and returns that node.
func (c *cli) listFeatures(ctx context.Context, client pb.RouteGuideClient, rect *pb.Rectangle, each func(*pb.Feature, string) error) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	var rpc call
	stream, err := client.ListFeatures(ctx, rect, rpc.opts()...)
	if err != nil {
		return "", rpcError("ListFeatures", err, "")
	}
	node := ""
	for {
		f, err := stream.Recv()
		if err == io.EOF {
			return rpc.node(), nil
		}
		if err != nil {
			return rpc.node(), rpcError("ListFeatures", err, rpc.node())
		}
		if node == "" {
			header, _ := stream.Header() // here since a message came
			node = load.NodeOf(header, nil)
		}
		if err := each(f, node); err != nil {
			return node, err
		}
	}
}

func (c *cli) record(ctx context.Context, args []string) error {
	if err := wantArgs(args, 1, "N, the number of points"); err != nil {
		return err
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 1 {
		return usagef("N %q is not a number of points of at least 1", args[0])
	}
	route := randomRoute(c.rng, n)
	conn, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	summary, node, err := c.recordRoute(ctx, pb.NewRouteGuideClient(conn), route)
	if err != nil {
		return err
	}
	if c.cfg.JSON {
		return c.printJSON(toSummaryJSON(summary, node))
	}
	_, err = fmt.Fprintln(c.io.Stdout, summaryText(summary)+nodeText(node))
	return err
}

// randomRoute is n points of random known features, as the canonical client
// draws its routes.
func randomRoute(rng *rand.Rand, n int) []*pb.Point {
	all := features.Default().All()
	route := make([]*pb.Point, n)
	for i := range route {
		route[i] = all[rng.IntN(len(all))].Location
	}
	return route
}

func (c *cli) recordRoute(ctx context.Context, client pb.RouteGuideClient, route []*pb.Point) (*pb.RouteSummary, string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	var rpc call
	stream, err := client.RecordRoute(ctx, rpc.opts()...)
	if err != nil {
		return nil, "", rpcError("RecordRoute", err, "")
	}
	for _, p := range route {
		// A failed Send means the stream is over; CloseAndRecv says why.
		if err := stream.Send(p); err != nil {
			break
		}
	}
	summary, err := stream.CloseAndRecv()
	if err != nil {
		return nil, rpc.node(), rpcError("RecordRoute", err, rpc.node())
	}
	return summary, rpc.node(), nil
}

// chat sends the notes of stdin as they are read, while the notes that come
// back are printed. It has no deadline: it lasts as long as stdin.
func (c *cli) chat(ctx context.Context, args []string) error {
	if err := wantArgs(args, 0, ""); err != nil {
		return err
	}
	conn, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if isTerminal(c.io.Stdin) {
		fmt.Fprintln(c.io.Stderr, chatPrompt)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var rpc call
	stream, err := pb.NewRouteGuideClient(conn).RouteChat(ctx, rpc.opts()...)
	if err != nil {
		return rpcError("RouteChat", err, "")
	}

	var received int
	var receiveErr error
	receiving := make(chan struct{})
	go func() {
		defer close(receiving)
		receiveErr = receiveNotes(stream, func(n *pb.RouteNote, node string) error {
			received++
			if c.cfg.JSON {
				return c.printJSON(toNoteJSON(n, node))
			}
			_, err := fmt.Fprintln(c.io.Stdout, noteText(n))
			return err
		})
	}()
	// Reading stdin cannot be interrupted, so the reader is not waited for:
	// it stops at its next line, or at the end of stdin, once chat returns.
	lines := make(chan line)
	stopReading := make(chan struct{})
	defer close(stopReading)
	go readLines(c.io.Stdin, lines, stopReading)

	sendErr := sendNotes(ctx, stream, lines, receiving)
	if sendErr != nil && !errors.Is(sendErr, errStreamEnded) {
		cancel() // ends the stream, and so the receiver
		<-receiving
		return sendErr
	}
	<-receiving
	switch {
	case receiveErr != nil:
		return rpcError("RouteChat", receiveErr, rpc.node())
	case sendErr != nil:
		return fmt.Errorf("RouteChat: the stream ended before every note was sent%s", nodeText(rpc.node()))
	}
	if !c.cfg.JSON {
		_, err = fmt.Fprintf(c.io.Stdout, "received %d note%s%s\n", received, plural(received), nodeText(rpc.node()))
	}
	return err
}

// chatPrompt tells a person at a terminal what chat reads.
const chatPrompt = `Type a note a line, "LAT LON message" (40.7484405 -73.9856644 hello); Ctrl-D ends the chat.`

// errStreamEnded says that a chat ended while notes were still being sent.
var errStreamEnded = errors.New("stream ended")

// sendNotes sends a note for each line until the lines run out, and then
// closes the sending side. It stops early when ctx ends or when receiving is
// closed, which means the stream is over.
func sendNotes(ctx context.Context, stream pb.RouteGuide_RouteChatClient, lines <-chan line, receiving <-chan struct{}) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-receiving:
			return errStreamEnded
		case l, ok := <-lines:
			if !ok {
				if err := stream.CloseSend(); err != nil {
					return fmt.Errorf("RouteChat: close sending: %w", err)
				}
				return nil
			}
			if l.err != nil {
				return fmt.Errorf("read stdin: %w", l.err)
			}
			note, err := parseNote(l.text)
			if err != nil {
				return usagef("stdin line %d: %v", l.number, err)
			}
			if note == nil {
				continue // a blank line
			}
			if err := stream.Send(note); err != nil {
				return errStreamEnded // the receiver says why
			}
		}
	}
}

// parseNote reads "LAT LON message"; a blank line is no note and no error.
func parseNote(text string) (*pb.RouteNote, error) {
	text = strings.TrimSpace(text)
	if text == "" {
		return nil, nil
	}
	fields := strings.Fields(text)
	if len(fields) < 2 {
		return nil, errors.New(`want "LAT LON message"`)
	}
	point, err := parsePoint(fields[0], fields[1])
	if err != nil {
		return nil, err
	}
	rest := strings.TrimSpace(strings.TrimPrefix(text, fields[0]))
	message := strings.TrimSpace(strings.TrimPrefix(rest, fields[1]))
	return &pb.RouteNote{Location: point, Message: message}, nil
}

// receiveNotes hands every note that comes back to each, with the node that
// sent it, until the stream ends; it returns nil when it ended with OK.
func receiveNotes(stream pb.RouteGuide_RouteChatClient, each func(*pb.RouteNote, string) error) error {
	node := ""
	for {
		n, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if node == "" {
			header, _ := stream.Header()
			node = load.NodeOf(header, nil)
		}
		if err := each(n, node); err != nil {
			return err
		}
	}
}

// line is one line of input, or the error that ended the input.
type line struct {
	number int
	text   string
	err    error
}

// maxLine bounds a line of chat input: a note's message and its coordinates.
const maxLine = 1 << 20

// readLines sends the lines of r to lines and closes it at the end of r. It
// stops early, after its current read, once stop is closed.
func readLines(r io.Reader, lines chan<- line, stop <-chan struct{}) {
	defer close(lines)
	scanner := bufio.NewScanner(r)
	scanner.Buffer(make([]byte, 0, 64<<10), maxLine)
	for number := 1; scanner.Scan(); number++ {
		select {
		case lines <- line{number: number, text: scanner.Text()}:
		case <-stop:
			return
		}
	}
	if err := scanner.Err(); err != nil {
		select {
		case lines <- line{err: err}:
		case <-stop:
		}
	}
}

// The canonical client's tour.
var (
	// tourRectangle is the canonical client's rectangle.
	tourRectangle = &pb.Rectangle{
		Lo: &pb.Point{Latitude: 400000000, Longitude: -750000000},
		Hi: &pb.Point{Latitude: 420000000, Longitude: -730000000},
	}
	// tourNotes are the canonical client's notes: three locations, each
	// visited twice.
	tourNotes = []*pb.RouteNote{
		{Location: &pb.Point{Latitude: 0, Longitude: 1}, Message: "First message"},
		{Location: &pb.Point{Latitude: 0, Longitude: 2}, Message: "Second message"},
		{Location: &pb.Point{Latitude: 0, Longitude: 3}, Message: "Third message"},
		{Location: &pb.Point{Latitude: 0, Longitude: 1}, Message: "Fourth message"},
		{Location: &pb.Point{Latitude: 0, Longitude: 2}, Message: "Fifth message"},
		{Location: &pb.Point{Latitude: 0, Longitude: 3}, Message: "Sixth message"},
	}
)

// tourGets is how many known features the tour asks for at once; it asks for
// (0, 0), where nothing is, as well.
const tourGets = 4

// tourPoints are the points of the tour's concurrent GetFeature calls.
func tourPoints() []*pb.Point {
	all := features.Default().All()
	points := make([]*pb.Point, 0, tourGets+1)
	for _, f := range all[:min(tourGets, len(all))] {
		points = append(points, f.Location)
	}
	return append(points, &pb.Point{})
}

// tourRouteLength is how many points the tour's route has: 2 to 101, as in
// the canonical client.
func tourRouteLength(rng *rand.Rand) int { return 2 + rng.IntN(100) }

func (c *cli) tour(ctx context.Context, args []string) error {
	if err := wantArgs(args, 0, ""); err != nil {
		return err
	}
	route := randomRoute(c.rng, tourRouteLength(c.rng))
	conn, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	client := pb.NewRouteGuideClient(conn)
	var out tourJSON
	text := func(format string, args ...any) {
		if !c.cfg.JSON {
			fmt.Fprintf(c.io.Stdout, format, args...)
		}
	}

	// GetFeature, several calls in flight at once, printed in order.
	points := tourPoints()
	text("== GetFeature: %d calls at once\n", len(points))
	type answer struct {
		feature *pb.Feature
		node    string
		err     error
	}
	answers := make([]answer, len(points))
	var wg sync.WaitGroup
	for i, p := range points {
		wg.Go(func() {
			f, node, err := c.getFeature(ctx, client, p)
			answers[i] = answer{f, node, err}
		})
	}
	wg.Wait()
	for _, a := range answers {
		if a.err != nil {
			return a.err
		}
		out.Get = append(out.Get, toFeatureJSON(a.feature, a.node))
		text("%s%s\n", featureText(a.feature), nodeText(a.node))
	}

	text("== ListFeatures from %s to %s\n", formatPoint(tourRectangle.Lo), formatPoint(tourRectangle.Hi))
	out.List = []featureJSON{}
	node, err := c.listFeatures(ctx, client, tourRectangle, func(f *pb.Feature, node string) error {
		out.List = append(out.List, toFeatureJSON(f, node))
		text("%s\n", listedFeatureText(f))
		return nil
	})
	if err != nil {
		return err
	}
	text("%d feature%s%s\n", len(out.List), plural(len(out.List)), nodeText(node))

	text("== RecordRoute of %d random points\n", len(route))
	summary, node, err := c.recordRoute(ctx, client, route)
	if err != nil {
		return err
	}
	out.Record = toSummaryJSON(summary, node)
	text("%s%s\n", summaryText(summary), nodeText(node))

	text("== RouteChat of %d notes\n", len(tourNotes))
	if out.Chat, err = c.tourChat(ctx, client); err != nil {
		return err
	}
	for _, n := range out.Chat {
		text("%s %s\n", formatPoint(&pb.Point{Latitude: n.Location.Latitude, Longitude: n.Location.Longitude}), n.Message)
	}
	if len(out.Chat) > 0 {
		text("received %d note%s%s\n", len(out.Chat), plural(len(out.Chat)), nodeText(out.Chat[0].Node))
	}
	if c.cfg.JSON {
		return c.printJSON(out)
	}
	return nil
}

// tourChat sends the canonical notes and returns every note that comes back.
func (c *cli) tourChat(ctx context.Context, client pb.RouteGuideClient) ([]noteJSON, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	var rpc call
	stream, err := client.RouteChat(ctx, rpc.opts()...)
	if err != nil {
		return nil, rpcError("RouteChat", err, "")
	}
	for _, n := range tourNotes {
		if err := stream.Send(n); err != nil {
			break // Recv says why
		}
	}
	if err := stream.CloseSend(); err != nil {
		return nil, rpcError("RouteChat", err, rpc.node())
	}
	notes := []noteJSON{}
	err = receiveNotes(stream, func(n *pb.RouteNote, node string) error {
		notes = append(notes, toNoteJSON(n, node))
		return nil
	})
	if err != nil {
		return nil, rpcError("RouteChat", err, rpc.node())
	}
	return notes, nil
}
