// CoreDNS for the one-node test cluster (hack/devenv node): the server of the CoreDNS module
// with only the plugins its Corefile uses, so that the build leaves out the cloud backends
// (route53, azure, clouddns, ...). Built by hack/tools.sh (`make node-tools`) into a static
// binary that goes into a scratch image imported into containerd.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/whoami"
)

func init() {
	// The order in which a query passes the plugins of a server block (the upstream order,
	// restricted to the plugins imported above).
	dnsserver.Directives = []string{
		"bind", "ready", "health", "prometheus", "errors", "log",
		"loadbalance", "cache", "hosts", "kubernetes", "whoami",
	}
}

func main() {
	coremain.Run()
}
