package grayfault

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

func TestFailPercentFailsThatShareSpreadEvenlyAndSparesOtherServices(t *testing.T) {
	f := &Fault{FailPercent: 30}
	ok := func(context.Context, any) (any, error) { return nil, nil }
	failed, run := 0, 0
	for i := range 100 {
		_, err := f.unary(t.Context(), nil, &grpc.UnaryServerInfo{FullMethod: "/routeguide.RouteGuide/GetFeature"}, ok)
		if status.Code(err) == codes.Unavailable {
			failed++
			run++
			if run > 1 {
				t.Fatalf("call %d: two failures in a row at 30%%", i)
			}
		} else {
			run = 0
		}
	}
	if failed != 30 {
		t.Errorf("%d of 100 calls failed, want 30", failed)
	}
	for range 10 {
		if _, err := f.unary(t.Context(), nil, &grpc.UnaryServerInfo{FullMethod: "/" + healthpb.Health_ServiceDesc.ServiceName + "/Check"}, ok); err != nil {
			t.Fatalf("a health check failed: %v", err)
		}
	}
	f.FollowSwitches(strings.NewReader("off\n"))
	for range 10 {
		if _, err := f.unary(t.Context(), nil, &grpc.UnaryServerInfo{FullMethod: "/routeguide.RouteGuide/GetFeature"}, ok); err != nil {
			t.Fatalf("a call failed with the fault off: %v", err)
		}
	}
}
