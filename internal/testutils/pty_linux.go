//go:build linux

package testutils

import (
	"fmt"
	"os"
	"syscall"
	"testing"
	"unsafe"
)

// OpenPTY returns a new pseudo-terminal, for tests of what a command does
// when a person, not a pipe, is at the other end: the terminal, which a command takes as
// its stdin or stdout, and the controller, where the test types and reads
// what the command shows. Both are closed when tb ends.
func OpenPTY(tb testing.TB) (terminal, controller *os.File) {
	tb.Helper()
	controller, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		tb.Skipf("no pseudo-terminal here: %v", err)
	}
	tb.Cleanup(func() { controller.Close() })
	var unlock int32
	if err := ioctl(controller, syscall.TIOCSPTLCK, unsafe.Pointer(&unlock)); err != nil {
		tb.Fatalf("unlock the pseudo-terminal: %v", err)
	}
	var n uint32
	if err := ioctl(controller, syscall.TIOCGPTN, unsafe.Pointer(&n)); err != nil {
		tb.Fatalf("number of the pseudo-terminal: %v", err)
	}
	terminal, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { terminal.Close() })
	return terminal, controller
}

func ioctl(f *os.File, request uintptr, arg unsafe.Pointer) error {
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), request, uintptr(arg)); errno != 0 {
		return errno
	}
	return nil
}
