// Command etcd is the etcd server at the version go.mod pins. etcd's own server module
// replaces its sibling modules with local folders, so it cannot be `go install`ed; this
// module requires the released siblings instead and calls the same entry point.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
