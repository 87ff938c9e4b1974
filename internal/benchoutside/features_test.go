package benchoutside_test

import (
	"testing"

	"github.com/routeguide-cluster/routeguide/internal/testutils/canonical"
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
		served.file = canonical.WriteFeatures(tb, features.Default().All()[:100])
	default:
		tb.Fatalf("-outside.features=%q: want canonical or builtin100", which)
	}
}
