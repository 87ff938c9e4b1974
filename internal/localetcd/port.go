package localetcd

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Picking the client port: for port 0, Start picks a free port below the
// ephemeral range, so that no outgoing connection takes it while a test has
// etcd stopped. See docs/DESIGN.md, "A restartable etcd port for tests".

// defaultEphemeralStart is where Linux's ephemeral range starts by default,
// for when /proc does not say.
const defaultEphemeralStart = 32768

// lowestPickedPort keeps picked ports clear of the well-known and commonly
// configured ones.
const lowestPickedPort = 10000

// pickAttempts bounds the ports tried before giving up.
const pickAttempts = 100

// ephemeralStart is the first port of the kernel's ephemeral range.
func ephemeralStart() int {
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return defaultEphemeralStart
	}
	fields := strings.Fields(string(data))
	if len(fields) != 2 {
		return defaultEphemeralStart
	}
	start, err := strconv.Atoi(fields[0])
	if err != nil {
		return defaultEphemeralStart
	}
	return start
}

// freePortBelowEphemeral returns a port on host, below the ephemeral range,
// that nothing listens on now.
func freePortBelowEphemeral(host string) (string, error) {
	end := ephemeralStart()
	if end-lowestPickedPort < pickAttempts {
		return "", fmt.Errorf("pick a client port: the ephemeral range starts at %d, leaving too few ports below it", end)
	}
	for range pickAttempts {
		port := strconv.Itoa(lowestPickedPort + rand.IntN(end-lowestPickedPort))
		lis, err := net.Listen("tcp", net.JoinHostPort(host, port))
		if err != nil {
			continue // taken: try another
		}
		lis.Close()
		return port, nil
	}
	return "", fmt.Errorf("pick a client port: no free port on %s among %d tried below %d", host, pickAttempts, end)
}

// addressInUse reports whether err is a failed bind to a port in use.
func addressInUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE)
}
