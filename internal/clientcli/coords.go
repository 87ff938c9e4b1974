package clientcli

import (
	"fmt"
	"math"
	"strconv"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
)

// parsePoint reads a latitude and a longitude in decimal degrees into E7.
func parsePoint(lat, lon string) (*pb.Point, error) {
	latE7, err := parseDegrees("latitude", lat, 90)
	if err != nil {
		return nil, err
	}
	lonE7, err := parseDegrees("longitude", lon, 180)
	if err != nil {
		return nil, err
	}
	return &pb.Point{Latitude: latE7, Longitude: lonE7}, nil
}

// parseDegrees reads one coordinate in decimal degrees, within [-limit, limit],
// and returns it in E7: degrees x 10^7, rounded.
func parseDegrees(axis, s string, limit float64) (int32, error) {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("%s %q is not a number of degrees", axis, s)
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("%s %q is not a finite number", axis, s)
	}
	if math.Abs(v) > limit {
		return 0, fmt.Errorf("%s %s is out of range [-%g, %g]", axis, s, limit, limit)
	}
	return int32(math.Round(v * 1e7)), nil
}

// formatE7 writes a coordinate in E7 as exact decimal degrees, without
// trailing zeros: 407838351 is "40.7838351", 409000000 is "40.9".
func formatE7(v int32) string {
	abs := int64(v)
	sign := ""
	if abs < 0 {
		abs, sign = -abs, "-"
	}
	whole, frac := abs/1e7, abs%1e7
	if frac == 0 {
		return sign + strconv.FormatInt(whole, 10)
	}
	digits := fmt.Sprintf("%07d", frac)
	for digits[len(digits)-1] == '0' {
		digits = digits[:len(digits)-1]
	}
	return sign + strconv.FormatInt(whole, 10) + "." + digits
}

// formatPoint writes "(lat, lon)" in decimal degrees.
func formatPoint(p *pb.Point) string {
	return "(" + formatE7(p.GetLatitude()) + ", " + formatE7(p.GetLongitude()) + ")"
}
