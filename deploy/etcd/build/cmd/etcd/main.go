// Command etcd is etcd's server, built from etcd's Go module at the version
// the routeguide module uses, for deploy/build-images.sh and deploy/Dockerfile.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
