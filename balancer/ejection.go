package balancer

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/routeguide-cluster/routeguide/internal/callpolicy"
)

// Outlier ejection with gRFC A50's failure-percentage semantics, in the
// policy itself rather than gRPC's outlier_detection_experimental over it:
// that policy is internal to grpc-go, registered only by linking all of
// xDS (143 more packages in every binary that imports this one, the node
// among them), and it tells of its ejections only to a stats handler, which
// costs every call (docs/DESIGN.md, "Slow and failing nodes").
// TestTheNodeLinksNoXDSClient keeps the first reason true.

// OutlierDetection is A50's configuration, as the policy's config spells it
// in a service config (outlierDetection); the type is shared with package
// xdsserver, which serves the same to the clients of other languages.
type OutlierDetection = callpolicy.OutlierDetection

// FailurePercentageEjection is OutlierDetection's one algorithm.
type FailurePercentageEjection = callpolicy.FailurePercentageEjection

// outlierDetectionJSON is OutlierDetection in a service config, durations
// as strings ("2s").
type outlierDetectionJSON struct {
	Interval                  string                     `json:"interval,omitempty"`
	BaseEjectionTime          string                     `json:"baseEjectionTime,omitempty"`
	MaxEjectionTime           string                     `json:"maxEjectionTime,omitempty"`
	MaxEjectionPercent        uint32                     `json:"maxEjectionPercent,omitempty"`
	FailurePercentageEjection *FailurePercentageEjection `json:"failurePercentageEjection,omitempty"`
}

// outlierDetectionToJSON is od as the service config carries it.
func outlierDetectionToJSON(od OutlierDetection) *outlierDetectionJSON {
	j := &outlierDetectionJSON{MaxEjectionPercent: od.MaxEjectionPercent, FailurePercentageEjection: od.FailurePercentageEjection}
	for _, f := range []struct {
		d   time.Duration
		out *string
	}{{od.Interval, &j.Interval}, {od.BaseEjectionTime, &j.BaseEjectionTime}, {od.MaxEjectionTime, &j.MaxEjectionTime}} {
		if f.d != 0 {
			*f.out = seconds(f.d)
		}
	}
	return j
}

// parse reads j's durations.
func (j outlierDetectionJSON) parse() (OutlierDetection, error) {
	od := OutlierDetection{MaxEjectionPercent: j.MaxEjectionPercent, FailurePercentageEjection: j.FailurePercentageEjection}
	for _, f := range []struct {
		name, in string
		out      *time.Duration
	}{{"interval", j.Interval, &od.Interval}, {"baseEjectionTime", j.BaseEjectionTime, &od.BaseEjectionTime}, {"maxEjectionTime", j.MaxEjectionTime, &od.MaxEjectionTime}} {
		if f.in == "" {
			continue
		}
		d, err := parseSeconds(f.in)
		if err != nil {
			return OutlierDetection{}, fmt.Errorf("outlierDetection.%s: %w", f.name, err)
		}
		*f.out = d
	}
	return od, nil
}

// DefaultOutlierDetection is what the policy uses unless its config says
// otherwise. Against A50's defaults: a check every 2s rather than 10s, so a
// failing node is out within a few seconds; 10s out at first rather than 30s;
// ejection at 20% failures rather than 85% and always enforced (A50 enforces
// none by default); and minimumHosts 3 rather than 5, which would never eject
// in a cluster of three. maxEjectionPercent stays 10: one node at a time in
// clusters up to ten, as A50 counts it.
var DefaultOutlierDetection = OutlierDetection{
	Interval:           2 * time.Second,
	BaseEjectionTime:   10 * time.Second,
	MaxEjectionTime:    300 * time.Second,
	MaxEjectionPercent: 10,
	FailurePercentageEjection: &FailurePercentageEjection{
		Threshold:             20,
		EnforcementPercentage: 100,
		MinimumHosts:          3,
		RequestVolume:         20,
	},
}

// ejection is one endpoint's ejection state; the sweep that changes it
// holds sharding.mu.
type ejection struct {
	ejected    bool
	since      time.Time
	multiplier int
}

// sweepLocked is one interval of A50's algorithm over every endpoint:
// take each endpoint's counts, eject the ones failing past the threshold
// while the cap allows, and bring back those whose time is up. It reports
// whether the set of ejected endpoints changed.
func sweepLocked(od OutlierDetection, endpoints []*child, now time.Time) (changed bool) {
	type counts struct{ calls, failures uint64 }
	seen := make([]counts, len(endpoints))
	ejected := 0
	for i, c := range endpoints {
		seen[i] = counts{c.load.calls.Swap(0), c.load.failures.Swap(0)}
		if c.ejection.ejected {
			ejected++
		}
	}
	if f := od.FailurePercentageEjection; f != nil {
		volume := 0
		for _, s := range seen {
			if s.calls >= uint64(f.RequestVolume) {
				volume++
			}
		}
		if volume >= int(f.MinimumHosts) {
			for i, c := range endpoints {
				s := seen[i]
				if c.ejection.ejected || s.calls < uint64(f.RequestVolume) || s.failures*100 <= uint64(f.Threshold)*s.calls {
					continue
				}
				if ejected*100 >= int(od.MaxEjectionPercent)*len(endpoints) {
					break
				}
				if rand.Uint32N(100) < f.EnforcementPercentage {
					c.ejection = ejection{ejected: true, since: now, multiplier: c.ejection.multiplier + 1}
					c.load.ejected.Store(true)
					c.load.ejectedOnce()
					ejected++
					changed = true
				}
			}
		}
	}
	for _, c := range endpoints {
		e := &c.ejection
		if !e.ejected {
			if e.multiplier > 0 {
				e.multiplier--
			}
			continue
		}
		out := (od.BaseEjectionTime) * time.Duration(e.multiplier)
		out = min(out, max((od.BaseEjectionTime), (od.MaxEjectionTime)))
		if !now.Before(e.since.Add(out)) {
			e.ejected = false
			c.load.ejected.Store(false)
			changed = true
		}
	}
	return changed
}
