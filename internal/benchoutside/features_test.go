package benchoutside_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/routeguide-cluster/routeguide/routeguide/features"
)

// served is the features file both servers serve, and whose points the
// loads ask for (`client load` aside, which asks for the built-in ones).
var served struct{ file string }

// serveFeatures sets served.file: "canonical" is the example module's
// route_guide_db.json; "builtin100" the first 100 built-in features, the
// ones the in-process benchmark serves.
func serveFeatures(tb testing.TB, which string) {
	tb.Helper()
	switch which {
	case "canonical":
		served.file = examples.featuresFile
	case "builtin100":
		type location struct {
			Latitude  int32 `json:"latitude"`
			Longitude int32 `json:"longitude"`
		}
		type entry struct {
			Location location `json:"location"`
			Name     string   `json:"name"`
		}
		var list []entry
		for _, f := range features.Default().All()[:100] {
			list = append(list, entry{location{f.Location.Latitude, f.Location.Longitude}, f.Name})
		}
		data, err := json.Marshal(list)
		if err != nil {
			tb.Fatal(err)
		}
		served.file = filepath.Join(tb.TempDir(), "builtin100.json")
		if err := os.WriteFile(served.file, data, 0o644); err != nil {
			tb.Fatal(err)
		}
	default:
		tb.Fatalf("-outside.features=%q: want canonical or builtin100", which)
	}
}
