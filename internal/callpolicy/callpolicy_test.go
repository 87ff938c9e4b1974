package callpolicy

import (
	"strings"
	"testing"
	"time"
)

func TestValidateNamesTheFieldOutOfA50sBounds(t *testing.T) {
	fp := func(f FailurePercentageEjection) *FailurePercentageEjection { return &f }
	for _, tt := range []struct {
		od   OutlierDetection
		want string // "" for valid
	}{
		{OutlierDetection{}, ""},
		{OutlierDetection{MaxEjectionPercent: 100, FailurePercentageEjection: fp(FailurePercentageEjection{Threshold: 100, EnforcementPercentage: 100})}, ""},
		{OutlierDetection{MaxEjectionPercent: 101}, "outlierDetection.maxEjectionPercent"},
		{OutlierDetection{FailurePercentageEjection: fp(FailurePercentageEjection{Threshold: 101})}, "failurePercentageEjection.threshold"},
		{OutlierDetection{FailurePercentageEjection: fp(FailurePercentageEjection{EnforcementPercentage: 101})}, "failurePercentageEjection.enforcementPercentage"},
		{OutlierDetection{Interval: -time.Second}, "outlierDetection.interval"},
		{OutlierDetection{BaseEjectionTime: -time.Second}, "outlierDetection.baseEjectionTime"},
		{OutlierDetection{MaxEjectionTime: -time.Second}, "outlierDetection.maxEjectionTime"},
	} {
		err := tt.od.Validate()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%+v: %v, want valid", tt.od, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%+v: error %v, want one naming %s", tt.od, err, tt.want)
		}
	}
}

func TestWithDefaultsFillsOnlyTheZeroFields(t *testing.T) {
	set := OutlierDetection{Interval: time.Second, MaxEjectionPercent: 33, FailurePercentageEjection: &FailurePercentageEjection{MinimumHosts: 3}}
	got := set.WithDefaults()
	fp := *got.FailurePercentageEjection
	if got.Interval != time.Second || got.BaseEjectionTime != 30*time.Second || got.MaxEjectionTime != 300*time.Second || got.MaxEjectionPercent != 33 ||
		fp != (FailurePercentageEjection{Threshold: 85, EnforcementPercentage: 100, MinimumHosts: 3, RequestVolume: 50}) {
		t.Errorf("WithDefaults of %+v = %+v, %+v", set, got, fp)
	}
	if set.FailurePercentageEjection.Threshold != 0 {
		t.Error("WithDefaults changed the ejection it was given")
	}
	if got := (OutlierDetection{}).WithDefaults(); got.FailurePercentageEjection != nil {
		t.Errorf("WithDefaults turned ejection on: %+v", got.FailurePercentageEjection)
	}
}

func TestValidateFullMethod(t *testing.T) {
	for _, name := range []string{"/routeguide.RouteGuide/GetFeature", "/Echo/Get"} {
		if err := ValidateFullMethod(name); err != nil {
			t.Errorf("%q: %v", name, err)
		}
	}
	for _, name := range []string{"", "GetFeature", "/routeguide.RouteGuide", "//GetFeature", "/routeguide.RouteGuide/", "/a/b/c"} {
		if err := ValidateFullMethod(name); err == nil || !strings.Contains(err.Error(), "not /package.Service/Method") {
			t.Errorf("%q: %v, want refused", name, err)
		}
	}
}
