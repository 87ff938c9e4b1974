package testutils

import (
	"syscall"
	"testing"
	"time"
)

// ProcessCPUTime is the CPU time, user and system, this process has used so
// far: in a benchmark that runs its servers in process, theirs and the
// client's. Per operation, it does not depend on how busy the machine is.
func ProcessCPUTime(tb testing.TB) time.Duration {
	tb.Helper()
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano())
}
