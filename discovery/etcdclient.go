package discovery

import (
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// EtcdConfig is how nodes and clients reach etcd.
type EtcdConfig struct {
	// Endpoints are the URLs of the etcd members.
	Endpoints []string
	// Username and Password authenticate to etcd when Username is set.
	Username string
	Password string
	// TLS secures the connection when set.
	TLS *tls.Config
}

// NewEtcdClient returns an etcd client configured for a long-lived process
// that must notice a lost member quickly and come back as soon as etcd does:
//
//   - reconnection waits at most 2s between attempts (gRPC's default grows
//     to 2 minutes), so that after an outage a node is registered again and
//     a resolver follows again within seconds of etcd's return;
//   - keepalive pings drop a member that stopped answering within 13s, so
//     the client moves to another member of the cluster.
//
// The client does not wait for a connection: calls do, within their context.
func NewEtcdClient(cfg EtcdConfig) (*clientv3.Client, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("etcd: no endpoints")
	}
	if cfg.Password != "" && cfg.Username == "" {
		return nil, errors.New("etcd: a password is set but no username")
	}
	logger, err := zap.NewProductionConfig().Build(zap.IncreaseLevel(zapcore.ErrorLevel))
	if err != nil {
		logger = zap.NewNop()
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            cfg.Endpoints,
		Username:             cfg.Username,
		Password:             cfg.Password,
		TLS:                  cfg.TLS,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		Logger:               logger,
		DialOptions: []grpc.DialOption{
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
				MinConnectTimeout: 2 * time.Second,
			}),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client for %v: %w", cfg.Endpoints, err)
	}
	return cli, nil
}
