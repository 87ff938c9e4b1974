// Package callpolicy holds what a client's calling policy is made of that
// both package balancer (in its service config) and package xdsserver (in
// the resources it serves) carry: outlier ejection by failure percentage
// (gRFC A50) and the full method names that retry policies name. It is a
// leaf of the standard library, so that neither of them imports the other.
package callpolicy

import (
	"fmt"
	"strings"
	"time"
)

// OutlierDetection is A50's configuration, less success-rate ejection (a
// mean and deviation over three nodes say little). A zero field takes A50's
// default (WithDefaults), except EnforcementPercentage, where zero means
// 100 (A50 says 0, for xDS, which enforces nothing unless told); a nil
// FailurePercentageEjection turns ejection off.
type OutlierDetection struct {
	Interval           time.Duration
	BaseEjectionTime   time.Duration
	MaxEjectionTime    time.Duration
	MaxEjectionPercent uint32
	// FailurePercentageEjection nil turns ejection off, as in A50.
	FailurePercentageEjection *FailurePercentageEjection
}

// FailurePercentageEjection ejects an endpoint whose attempts failed more
// than Threshold percent of the time in an interval, when it had at least
// RequestVolume attempts and at least MinimumHosts endpoints had as many.
type FailurePercentageEjection struct {
	Threshold             uint32 `json:"threshold,omitempty"`
	EnforcementPercentage uint32 `json:"enforcementPercentage,omitempty"`
	MinimumHosts          uint32 `json:"minimumHosts,omitempty"`
	RequestVolume         uint32 `json:"requestVolume,omitempty"`
}

// WithDefaults fills the zero fields with A50's defaults.
func (od OutlierDetection) WithDefaults() OutlierDetection {
	if od.Interval == 0 {
		od.Interval = 10 * time.Second
	}
	if od.BaseEjectionTime == 0 {
		od.BaseEjectionTime = 30 * time.Second
	}
	if od.MaxEjectionTime == 0 {
		od.MaxEjectionTime = 300 * time.Second
	}
	if od.MaxEjectionPercent == 0 {
		od.MaxEjectionPercent = 10
	}
	if f := od.FailurePercentageEjection; f != nil {
		f2 := *f
		if f2.Threshold == 0 {
			f2.Threshold = 85
		}
		if f2.EnforcementPercentage == 0 {
			f2.EnforcementPercentage = 100
		}
		if f2.MinimumHosts == 0 {
			f2.MinimumHosts = 5
		}
		if f2.RequestVolume == 0 {
			f2.RequestVolume = 50
		}
		od.FailurePercentageEjection = &f2
	}
	return od
}

// Validate checks the bounds A50 sets, naming the field at fault as a
// service config spells it.
func (od OutlierDetection) Validate() error {
	if od.MaxEjectionPercent > 100 {
		return fmt.Errorf("outlierDetection.maxEjectionPercent %d is over 100", od.MaxEjectionPercent)
	}
	if f := od.FailurePercentageEjection; f != nil {
		if f.Threshold > 100 {
			return fmt.Errorf("outlierDetection.failurePercentageEjection.threshold %d is over 100", f.Threshold)
		}
		if f.EnforcementPercentage > 100 {
			return fmt.Errorf("outlierDetection.failurePercentageEjection.enforcementPercentage %d is over 100", f.EnforcementPercentage)
		}
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{{"interval", od.Interval}, {"baseEjectionTime", od.BaseEjectionTime}, {"maxEjectionTime", od.MaxEjectionTime}} {
		if d.d < 0 {
			return fmt.Errorf("outlierDetection.%s %v is negative", d.name, d.d)
		}
	}
	return nil
}

// ValidateFullMethod reports whether name is a full gRPC method name,
// /package.Service/Method, as retry policies name methods.
func ValidateFullMethod(name string) error {
	service, method, _ := strings.Cut(strings.TrimPrefix(name, "/"), "/")
	if !strings.HasPrefix(name, "/") || service == "" || method == "" || strings.Contains(method, "/") {
		return fmt.Errorf("method %q: not /package.Service/Method", name)
	}
	return nil
}
