package node

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"strings"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"github.com/routeguide-cluster/routeguide/discovery"
)

// httpHandler serves the node's HTTP endpoints on the metrics listener:
//
//   - /metrics: the node's own registry, in the Prometheus formats;
//   - /healthz: 200 while the process runs (liveness);
//   - /readyz: 200 while the node serves and, unless standalone, is
//     registered in etcd; 503 otherwise (readiness);
//   - /sd: Prometheus HTTP service discovery, listing the metrics address
//     of every node registered under the service;
//   - with Config.DebugEndpoints, Go's pprof under /debug/pprof/, and gRPC's
//     admin services (channelz) as gRPC on the same port (see debugHandler).
func (n *Node) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.metrics.registry, promhttp.HandlerOpts{Registry: n.metrics.registry}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !n.isReady() {
			http.Error(w, "not ready\n", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /sd", n.serveSD)
	if n.admin != nil {
		return debugHandler(mux, n.admin)
	}
	return mux
}

// debugHandler adds pprof to mux, and sends gRPC requests (HTTP/2 with a
// gRPC content type; the metrics server speaks HTTP/2 without TLS) to
// admin, so that grpcdebug or grpcurl reach channelz at the metrics address.
// Off by default: pprof and channelz tell a caller much about the process.
func debugHandler(mux *http.ServeMux, admin *grpc.Server) http.Handler {
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			admin.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// isReady is what /readyz answers: serving, and registered unless standalone.
func (n *Node) isReady() bool {
	if !n.serving.Load() {
		return false
	}
	return n.etcd == nil || n.Registered()
}

// sdGroup is one target group of Prometheus's HTTP service discovery format.
type sdGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// serveSD lists, from the watch-fed View rather than an etcd read per
// request, every registered node that advertises a metrics address.
// Prometheus has no etcd discovery of its own; pointing http_sd_configs at
// any node's /sd lets it follow the cluster as nodes come and go. A
// standalone node lists itself.
func (n *Node) serveSD(w http.ResponseWriter, _ *http.Request) {
	groups := []sdGroup{}
	add := func(md discovery.Metadata) {
		if md.MetricsAddr == "" {
			return
		}
		groups = append(groups, sdGroup{
			Targets: []string{md.MetricsAddr},
			Labels:  map[string]string{"node_id": md.NodeID, "service": n.cfg.Service},
		})
	}
	if n.view != nil {
		for _, ep := range n.view.Endpoints() {
			add(ep.Metadata)
		}
	} else {
		add(discovery.Metadata{NodeID: n.id, MetricsAddr: n.MetricsAddr()})
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(groups)
}
