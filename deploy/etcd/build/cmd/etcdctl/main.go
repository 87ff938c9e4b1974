// Command etcdctl is etcd's command-line client, built from etcd's Go module
// at the version the routeguide module uses; the etcd image's healthcheck
// runs it.
package main

import (
	"go.etcd.io/etcd/etcdctl/v3/ctlv3"
)

func main() {
	ctlv3.MustStart()
}
