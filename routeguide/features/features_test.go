package features

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
)

func TestDefaultDataSetIsValidAndLargeEnough(t *testing.T) {
	db, err := Parse(defaultJSON)
	if err != nil {
		t.Fatalf("embedded data set: %v", err)
	}
	if db.Len() < 100 {
		t.Errorf("default data set has %d features, want at least 100", db.Len())
	}
	unnamed := 0
	for _, f := range db.All() {
		if f.Name == "" {
			unnamed++
		}
	}
	if unnamed == 0 {
		t.Error("default data set has no feature with an empty name; the canonical one has some")
	}
	if Default() != Default() {
		t.Error("Default parses the data set more than once")
	}
}

func TestParseReadsTheCanonicalFormat(t *testing.T) {
	db, err := Parse([]byte(`[
{"location":{"latitude":407838351,"longitude":-746143763},"name":"Patriots Path, Mendham, NJ 07945, USA"},
{"location":{"latitude":0,"longitude":0},"name":""},
{"location":{"longitude":-746143763},"name":"on the equator"}
]`))
	if err != nil {
		t.Fatal(err)
	}
	got := db.All()
	want := []*pb.Feature{
		{Name: "Patriots Path, Mendham, NJ 07945, USA", Location: &pb.Point{Latitude: 407838351, Longitude: -746143763}},
		{Name: "", Location: &pb.Point{}},
		{Name: "on the equator", Location: &pb.Point{Latitude: 0, Longitude: -746143763}},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d features, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].Name != want[i].Name || got[i].Location.Latitude != want[i].Location.Latitude ||
			got[i].Location.Longitude != want[i].Location.Longitude {
			t.Errorf("feature %d = %v, want %v", i, got[i], want[i])
		}
	}
}

func TestParseErrorsSayWhereAndWhat(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  []string // substrings of the error
	}{
		{"syntax error names line and column", "[\n{\"location\":{\"latitude\":1,\"longitude\":2},\"name\":\"a\"},\n{\"location\":{\"latitude\":1,,}}\n]", []string{"entry 1", "line 3, column 27", "invalid character ','"}},
		{"not an array", `{"location":{}}`, []string{"line 1, column 2", "expected a JSON array"}},
		{"empty input", ``, []string{"unexpected end of input"}},
		{"truncated", `[{"location":{"latitude":1,"longitude":2},"name":"a"}`, []string{"unexpected end of input"}},
		{"trailing data", `[] []`, []string{"unexpected data after the array"}},
		{"latitude out of range names the entry", `[{"location":{"latitude":1,"longitude":2},"name":"ok"},{"location":{"latitude":900000001,"longitude":0},"name":"North of the pole"}]`, []string{"entry 1", `"North of the pole"`, "latitude 900000001 is out of range"}},
		{"longitude out of range names the entry", `[{"location":{"latitude":0,"longitude":-1800000001},"name":"x"}]`, []string{"entry 0", "longitude -1800000001 is out of range"}},
		{"coordinate beyond int32", `[{"location":{"latitude":99999999999,"longitude":0},"name":"x"}]`, []string{"entry 0", "line 1", "latitude"}},
		{"fractional coordinate", `[{"location":{"latitude":1.5,"longitude":0},"name":"x"}]`, []string{"entry 0", "latitude"}},
		{"misspelt field", `[{"location":{"lattitude":1,"longitude":0},"name":"x"}]`, []string{"entry 0", "lattitude"}},
		{"missing location", `[{"name":"nowhere"}]`, []string{"entry 0", `"nowhere"`, "missing location"}},
		{"type error names the entry's line", "[\n  {\"location\":{\"latitude\":1,\"longitude\":2},\"name\":\"a\"},\n  {\"location\":{\"latitude\":\"north\",\"longitude\":2}}\n]", []string{"entry 1", "line 3, column 3", "latitude"}},
		{"name of the wrong type", `[{"location":{"latitude":1,"longitude":0},"name":5}]`, []string{"entry 0", "name"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.input))
			if err == nil {
				t.Fatal("Parse accepted invalid input")
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		})
	}
}

func TestLoadNamesTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(path, []byte(`[{]`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("Load error %v does not name %s", err, path)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("Load of a missing file succeeded")
	}
}

func TestAtFindsTheFirstFeatureInFileOrder(t *testing.T) {
	db := New([]*pb.Feature{
		feature("first", 10, 20),
		feature("elsewhere", 11, 20),
		feature("second at the same point", 10, 20),
		feature("", -5, -5),
	})
	tests := []struct {
		lat, lon  int32
		wantName  string
		wantFound bool
		wantCount int
	}{
		{10, 20, "first", true, 2},
		{11, 20, "elsewhere", true, 1},
		{-5, -5, "", true, 1},
		{20, 10, "", false, 0},
		{10, 21, "", false, 0},
	}
	for _, tt := range tests {
		f := db.At(tt.lat, tt.lon)
		if (f != nil) != tt.wantFound || (f != nil && f.Name != tt.wantName) {
			t.Errorf("At(%d, %d) = %v, want name %q found=%v", tt.lat, tt.lon, f, tt.wantName, tt.wantFound)
		}
		if got := db.CountAt(tt.lat, tt.lon); got != tt.wantCount {
			t.Errorf("CountAt(%d, %d) = %d, want %d", tt.lat, tt.lon, got, tt.wantCount)
		}
	}
}

func TestWithinMatchesAScanInFileOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, leafSize, leafSize + 1, 1000, 20000} {
		// Few distinct values force many ties on both axes.
		list := make([]*pb.Feature, n)
		for i := range list {
			list[i] = feature("", rng.Int32N(200)-100, rng.Int32N(200)-100)
		}
		db := New(list)
		for q := 0; q < 200; q++ {
			a := &pb.Point{Latitude: rng.Int32N(240) - 120, Longitude: rng.Int32N(240) - 120}
			b := &pb.Point{Latitude: rng.Int32N(240) - 120, Longitude: rng.Int32N(240) - 120}
			r := RectBetween(a, b)
			var want []*pb.Feature
			for _, f := range list {
				if r.contains(f.Location.Latitude, f.Location.Longitude) {
					want = append(want, f)
				}
			}
			got := slices.Collect(db.Within(r))
			if !slices.Equal(got, want) {
				t.Fatalf("n=%d: Within(%+v) returned %d features, a scan finds %d (or the order differs)", n, r, len(got), len(want))
			}
		}
	}
}

func TestWithinIncludesEdgesAndAcceptsCornersInAnyOrder(t *testing.T) {
	db := New([]*pb.Feature{
		feature("sw corner", 0, 0), feature("ne corner", 10, 10),
		feature("inside", 5, 5), feature("outside", 11, 5),
	})
	corners := [][2]*pb.Point{
		{{Latitude: 0, Longitude: 0}, {Latitude: 10, Longitude: 10}},
		{{Latitude: 10, Longitude: 10}, {Latitude: 0, Longitude: 0}},
		{{Latitude: 0, Longitude: 10}, {Latitude: 10, Longitude: 0}},
	}
	for _, c := range corners {
		var names []string
		for f := range db.Within(RectBetween(c[0], c[1])) {
			names = append(names, f.Name)
		}
		if want := []string{"sw corner", "ne corner", "inside"}; !slices.Equal(names, want) {
			t.Errorf("corners %v: got %q, want %q", c, names, want)
		}
	}
}

func TestWithinStopsWhenTheConsumerDoes(t *testing.T) {
	db := Default()
	seen := 0
	for range db.Within(Rect{-MaxLatitude, -MaxLongitude, MaxLatitude, MaxLongitude}) {
		seen++
		if seen == 3 {
			break
		}
	}
	if seen != 3 {
		t.Errorf("saw %d features, want 3", seen)
	}
}

func feature(name string, lat, lon int32) *pb.Feature {
	return &pb.Feature{Name: name, Location: &pb.Point{Latitude: lat, Longitude: lon}}
}

func TestWithinHoldsAtMostMaxIndexedIndexesHoweverLargeTheAnswer(t *testing.T) {
	db := randomDB(200_000)
	world := Rect{-MaxLatitude, -MaxLongitude, MaxLatitude, MaxLongitude}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	seen := 0
	for range db.Within(world) {
		seen++
	}
	runtime.ReadMemStats(&after)
	if seen != db.Len() {
		t.Fatalf("the whole world yielded %d features, want all %d", seen, db.Len())
	}
	// Collecting every index would take 800 KB and more for the growth of
	// the slice; MaxIndexed of them, grown by doubling, take under 64 KiB.
	const bound = 128 << 10
	if got := after.TotalAlloc - before.TotalAlloc; got > bound {
		t.Errorf("a whole-world Within over %d features allocated %d bytes, want at most %d", db.Len(), got, bound)
	}
}
