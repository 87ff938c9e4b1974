// Package features is RouteGuide's feature database: it reads features from the
// canonical route_guide_db.json format and answers exact-point and rectangle
// queries from indexes, without scanning every feature.
package features

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"slices"
	"sync"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
)

// Coordinate bounds in the E7 representation (degrees x 10^7).
const (
	MaxLatitude  = 90 * 1e7
	MaxLongitude = 180 * 1e7
)

//go:embed default_features.json
var defaultJSON []byte

var parseDefault = sync.OnceValues(func() (*DB, error) {
	return Parse(defaultJSON)
})

// Default returns the data set built into the binary. It is parsed once and
// shared: a DB is read-only and safe for concurrent use.
func Default() *DB {
	db, err := parseDefault()
	if err != nil {
		// The embedded file is checked by the tests; failing here is a build defect.
		panic("features: embedded default data set is invalid: " + err.Error())
	}
	return db
}

// DB is an immutable, indexed set of features. Its methods are safe for
// concurrent use, and the *pb.Feature values it returns are shared: callers
// must not modify them.
type DB struct {
	features []*pb.Feature       // in file order
	atPoint  map[uint64]pointRun // every point that holds a feature
	tree     kdTree              // for rectangle queries
}

// pointRun records the features at one point: the first in file order, and
// how many there are in all.
type pointRun struct {
	first int32
	count int32
}

func pointKey(lat, lon int32) uint64 {
	return uint64(uint32(lat))<<32 | uint64(uint32(lon))
}

// Load reads and indexes the features file at path.
func Load(path string) (*DB, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read features file: %w", err)
	}
	db, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("features file %s: %w", path, err)
	}
	return db, nil
}

// jsonFeature mirrors one entry of the canonical file. Pointers tell a missing
// location from one at 0,0; a missing latitude or longitude is 0, as in proto3
// JSON, which leaves zero values out.
type jsonFeature struct {
	Location *struct {
		Latitude  int32 `json:"latitude"`
		Longitude int32 `json:"longitude"`
	} `json:"location"`
	Name string `json:"name"`
}

// Parse reads a JSON array of features in the canonical format and indexes it.
// Syntax and type errors name the line and column; an invalid entry is named
// by its position in the array (from 0) and its name.
func Parse(data []byte) (*DB, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields() // a misspelt "lattitude" must not silently read as 0
	tok, err := dec.Token()
	if err != nil {
		return nil, positioned(data, 0, err)
	}
	if delim, ok := tok.(json.Delim); !ok || delim != '[' {
		return nil, fmt.Errorf("%s: expected a JSON array of features", position(data, dec.InputOffset()))
	}
	var list []*pb.Feature
	for dec.More() {
		start := dec.InputOffset()
		var entry jsonFeature
		if err := dec.Decode(&entry); err != nil {
			return nil, fmt.Errorf("entry %d: %w", len(list), positioned(data, skipSpace(data, start), err))
		}
		if entry.Location == nil {
			return nil, fmt.Errorf("entry %d %q (%s): missing location", len(list), entry.Name, position(data, skipSpace(data, start)))
		}
		lat, lon := entry.Location.Latitude, entry.Location.Longitude
		if err := CheckCoordinates(lat, lon); err != nil {
			return nil, fmt.Errorf("entry %d %q (%s): %w", len(list), entry.Name, position(data, skipSpace(data, start)), err)
		}
		list = append(list, &pb.Feature{
			Name:     entry.Name,
			Location: &pb.Point{Latitude: lat, Longitude: lon},
		})
	}
	if _, err := dec.Token(); err != nil { // the closing ']'
		return nil, positioned(data, dec.InputOffset(), err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%s: unexpected data after the array of features", position(data, dec.InputOffset()))
	}
	return New(list), nil
}

// CheckCoordinates reports whether lat and lon, in E7, lie on the globe.
func CheckCoordinates(lat, lon int32) error {
	if lat < -MaxLatitude || lat > MaxLatitude {
		return fmt.Errorf("latitude %d is out of range [-%d, %d]", lat, int32(MaxLatitude), int32(MaxLatitude))
	}
	if lon < -MaxLongitude || lon > MaxLongitude {
		return fmt.Errorf("longitude %d is out of range [-%d, %d]", lon, int32(MaxLongitude), int32(MaxLongitude))
	}
	return nil
}

// positioned says where in data a decoding error happened. A syntax error
// is placed exactly: json.Decoder's offsets can be off by the bytes it has
// already consumed, so the document is scanned again with json.Unmarshal,
// whose offsets are exact (this costs a second pass on the error path only).
// Any other error is placed at fallback, the start of the value being read.
func positioned(data []byte, fallback int64, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%s: unexpected end of input", position(data, int64(len(data))))
	}
	var syntaxErr *json.SyntaxError
	if errors.As(err, &syntaxErr) {
		var exact *json.SyntaxError
		if errors.As(json.Unmarshal(data, new(any)), &exact) {
			return fmt.Errorf("%s: %s", position(data, exact.Offset-1), exact.Error())
		}
	}
	return fmt.Errorf("%s: %w", position(data, fallback), err)
}

// skipSpace moves offset past white space and one separating comma, to where
// the next value starts.
func skipSpace(data []byte, offset int64) int64 {
	for offset < int64(len(data)) {
		switch data[offset] {
		case ' ', '\t', '\r', '\n', ',':
			offset++
		default:
			return offset
		}
	}
	return offset
}

// position turns a byte offset into "line L, column C", both from 1.
func position(data []byte, offset int64) string {
	offset = min(max(offset, 0), int64(len(data)))
	before := data[:offset]
	line := bytes.Count(before, []byte("\n")) + 1
	column := int(offset) - bytes.LastIndexByte(before, '\n')
	return fmt.Sprintf("line %d, column %d", line, column)
}

// New indexes features, which must already be valid. The DB keeps the slice.
func New(list []*pb.Feature) *DB {
	db := &DB{features: list, atPoint: make(map[uint64]pointRun, len(list))}
	for i, f := range list {
		key := pointKey(f.Location.Latitude, f.Location.Longitude)
		run, seen := db.atPoint[key]
		if !seen {
			run.first = int32(i)
		}
		run.count++
		db.atPoint[key] = run
	}
	db.tree = newKDTree(list)
	return db
}

// Len is the number of features, counting several at one point separately.
func (db *DB) Len() int { return len(db.features) }

// All returns every feature in file order.
func (db *DB) All() []*pb.Feature { return db.features }

// At returns the first feature, in file order, at exactly (lat, lon), or nil.
func (db *DB) At(lat, lon int32) *pb.Feature {
	run, ok := db.atPoint[pointKey(lat, lon)]
	if !ok {
		return nil
	}
	return db.features[run.first]
}

// CountAt is how many features stand at exactly (lat, lon).
func (db *DB) CountAt(lat, lon int32) int {
	return int(db.atPoint[pointKey(lat, lon)].count)
}

// Rect is a latitude-longitude box, edges included, with Min <= Max on both axes.
type Rect struct {
	MinLat, MinLon, MaxLat, MaxLon int32
}

// RectBetween is the box with corners a and b given in any order.
func RectBetween(a, b *pb.Point) Rect {
	return Rect{
		MinLat: min(a.Latitude, b.Latitude), MaxLat: max(a.Latitude, b.Latitude),
		MinLon: min(a.Longitude, b.Longitude), MaxLon: max(a.Longitude, b.Longitude),
	}
}

func (r Rect) contains(lat, lon int32) bool {
	return lat >= r.MinLat && lat <= r.MaxLat && lon >= r.MinLon && lon <= r.MaxLon
}

// indexPool holds the buffers Within collects indexes in. A new one starts
// with room for a typical answer: the pool drops its buffers at every GC
// (and a quarter of them at random under the race detector), and growing an
// empty slice to 55 indexes takes 7 allocations.
var indexPool = sync.Pool{New: func() any {
	buf := make([]int32, 0, 64)
	return &buf
}}

// MaxIndexed is how many matches Within sorts into file order through the
// index. A rectangle with more is answered by a scan of the whole file, which
// then costs about what sending its answer does: a stream's memory stays at
// MaxIndexed indexes however much of the world it asks for, and a client that
// never reads its answer holds no more than that.
const MaxIndexed = 4096

// Within yields every feature inside r in file order, as the canonical server,
// which scans the file, does.
func (db *DB) Within(r Rect) iter.Seq[*pb.Feature] {
	return func(yield func(*pb.Feature) bool) {
		buf := indexPool.Get().(*[]int32)
		found, indexed := db.tree.search(r, (*buf)[:0], MaxIndexed)
		defer func() {
			*buf = found[:0]
			indexPool.Put(buf)
		}()
		if !indexed {
			for _, f := range db.features {
				if r.contains(f.Location.Latitude, f.Location.Longitude) && !yield(f) {
					return
				}
			}
			return
		}
		slices.Sort(found)
		for _, i := range found {
			if !yield(db.features[i]) {
				return
			}
		}
	}
}
