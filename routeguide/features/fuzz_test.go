package features

import (
	"testing"
)

// FuzzParse feeds the parser arbitrary bytes: it must return a DB or an
// error, never panic, and a DB it returns holds only points on the globe,
// each found again by At.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`[{"location":{"latitude":407838351,"longitude":-746143763},"name":"Patriots Path"}]`))
	f.Add([]byte(`[{"location":{"latitude":900000001,"longitude":0},"name":"x"}]`))
	f.Add([]byte(`[{"location":{}}, {"name":""}]`))
	f.Add([]byte(`[] trailing`))
	f.Add([]byte(`[{"location":{"latitude":1.5}}]`))
	f.Add(defaultJSON[:len(defaultJSON)/2])
	f.Fuzz(func(t *testing.T, data []byte) {
		db, err := Parse(data)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		for i, feat := range db.All() {
			lat, lon := feat.Location.Latitude, feat.Location.Longitude
			if CheckCoordinates(lat, lon) != nil {
				t.Fatalf("feature %d at (%d, %d) is off the globe", i, lat, lon)
			}
			if db.At(lat, lon) == nil || db.CountAt(lat, lon) < 1 {
				t.Fatalf("feature %d at (%d, %d) is not found by At", i, lat, lon)
			}
		}
	})
}
