package features

import pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"

// leafSize is the length of a run that a search scans instead of splitting it
// further: below it, comparing every point is cheaper than descending.
const leafSize = 16

// kdPoint is one feature's point and its index in file order.
type kdPoint struct {
	lat, lon int32
	index    int32
}

// kdTree is a static two-dimensional k-d tree stored implicitly in one slice:
// the run [lo, hi) is split at mid = (lo+hi)/2; the points of [lo, mid) are <=
// points[mid] and those of (mid, hi) are >= points[mid] on the run's axis,
// which alternates between latitude (even depths) and longitude. A rectangle
// query visits O(sqrt(n) + k) points for k results, where a scan visits all n.
type kdTree struct {
	points []kdPoint
}

func newKDTree(list []*pb.Feature) kdTree {
	points := make([]kdPoint, len(list))
	for i, f := range list {
		points[i] = kdPoint{lat: f.Location.Latitude, lon: f.Location.Longitude, index: int32(i)}
	}
	buildRun(points, true)
	return kdTree{points: points}
}

func (p kdPoint) key(byLat bool) int32 {
	if byLat {
		return p.lat
	}
	return p.lon
}

func buildRun(points []kdPoint, byLat bool) {
	for len(points) > leafSize {
		mid := len(points) / 2
		selectNth(points, mid, byLat)
		buildRun(points[:mid], !byLat)
		points, byLat = points[mid+1:], !byLat
	}
}

// selectNth reorders points so that points[n] is the element that sorting by
// key would put there, with no greater key before it and no smaller one after
// it (Hoare's selection; expected linear time).
func selectNth(points []kdPoint, n int, byLat bool) {
	lo, hi := 0, len(points)-1
	for lo < hi {
		// Median of three as the pivot keeps sorted and reversed input linear.
		mid := lo + (hi-lo)/2
		if points[mid].key(byLat) < points[lo].key(byLat) {
			points[mid], points[lo] = points[lo], points[mid]
		}
		if points[hi].key(byLat) < points[lo].key(byLat) {
			points[hi], points[lo] = points[lo], points[hi]
		}
		if points[hi].key(byLat) < points[mid].key(byLat) {
			points[hi], points[mid] = points[mid], points[hi]
		}
		pivot := points[mid].key(byLat)
		i, j := lo, hi
		for i <= j {
			for points[i].key(byLat) < pivot {
				i++
			}
			for points[j].key(byLat) > pivot {
				j--
			}
			if i <= j {
				points[i], points[j] = points[j], points[i]
				i++
				j--
			}
		}
		// Now [lo, j] <= pivot <= [i, hi], and anything between equals pivot.
		switch {
		case n <= j:
			hi = j
		case n >= i:
			lo = i
		default:
			return
		}
	}
}

// search appends to found the file-order index of every point inside r. It
// stops, and reports false, as soon as found holds more than limit indexes.
func (t kdTree) search(r Rect, found []int32, limit int) ([]int32, bool) {
	return searchRun(t.points, true, r, found, limit)
}

func searchRun(points []kdPoint, byLat bool, r Rect, found []int32, limit int) ([]int32, bool) {
	for len(points) > leafSize {
		mid := len(points) / 2
		p := points[mid]
		if r.contains(p.lat, p.lon) {
			if found = append(found, p.index); len(found) > limit {
				return found, false
			}
		}
		lo, hi := r.MinLon, r.MaxLon
		if byLat {
			lo, hi = r.MinLat, r.MaxLat
		}
		split := p.key(byLat)
		goLeft, goRight := lo <= split, hi >= split
		switch {
		case goLeft && goRight:
			var complete bool
			if found, complete = searchRun(points[:mid], !byLat, r, found, limit); !complete {
				return found, false
			}
			points = points[mid+1:]
		case goLeft:
			points = points[:mid]
		case goRight:
			points = points[mid+1:]
		default:
			return found, true
		}
		byLat = !byLat
	}
	for _, p := range points {
		if r.contains(p.lat, p.lon) {
			if found = append(found, p.index); len(found) > limit {
				return found, false
			}
		}
	}
	return found, true
}
