package discovery

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// EtcdConfig is how nodes and clients reach etcd. Its String, GoString and
// LogValue leave the password out, so that printing or logging it is safe.
type EtcdConfig struct {
	// Endpoints are the URLs of the etcd members.
	Endpoints []string
	// Username and Password authenticate to etcd when Username is set.
	Username string
	Password string
	// TLS secures the connection when set: it holds the CA to trust, and
	// the client's certificate when etcd asks for one.
	TLS *tls.Config
	// AuthTimeout bounds the wait for the first token when Username is set;
	// zero means DefaultAuthTimeout.
	AuthTimeout time.Duration
}

// DefaultAuthTimeout is how long NewEtcdClient waits for etcd to
// authenticate the user.
const DefaultAuthTimeout = 10 * time.Second

// String describes the configuration without the password.
func (c EtcdConfig) String() string {
	password := "none"
	if c.Password != "" {
		password = "set"
	}
	return fmt.Sprintf("etcd %v (user %q, password %s, TLS %t)", c.Endpoints, c.Username, password, c.TLS != nil)
}

// GoString is String, so that %#v does not print the password either.
func (c EtcdConfig) GoString() string { return c.String() }

// MarshalJSON writes what LogValue records, so that a configuration dumped
// as JSON (a debug endpoint, a JSON log of a struct that holds one) does
// not carry the password either.
func (c EtcdConfig) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Endpoints   []string `json:"endpoints"`
		Username    string   `json:"username"`
		PasswordSet bool     `json:"password_set"`
		TLS         bool     `json:"tls"`
	}{c.Endpoints, c.Username, c.Password != "", c.TLS != nil})
}

// LogValue is what slog records of the configuration: no password.
func (c EtcdConfig) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Any("endpoints", c.Endpoints),
		slog.String("username", c.Username),
		slog.Bool("password_set", c.Password != ""),
		slog.Bool("tls", c.TLS != nil),
	)
}

// NewEtcdClient returns an etcd client for a long-lived process: it
// reconnects at most 2s apart and drops a silent member within 13s. It does
// not wait for a connection, except with a Username, for at most AuthTimeout.
// See docs/DESIGN.md, "The etcd client: reconnection, keepalive and
// authentication". extra adds to its gRPC dial options: a stats handler, say.
func NewEtcdClient(cfg EtcdConfig, extra ...grpc.DialOption) (*clientv3.Client, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("etcd: no endpoints")
	}
	if cfg.Password != "" && cfg.Username == "" {
		return nil, errors.New("etcd: a password is set but no username")
	}
	logger, err := zap.NewProductionConfig().Build(zap.IncreaseLevel(zapcore.ErrorLevel), zap.WrapCore(dropCanceled))
	if err != nil {
		logger = zap.NewNop()
	}
	// etcd's client bounds the first token fetch with DialTimeout, and the
	// wait for a lease's first keepalive answer with DialTimeout+1s; without
	// a user, both keep etcd's defaults.
	var authTimeout time.Duration
	if cfg.Username != "" {
		authTimeout = cmp.Or(cfg.AuthTimeout, DefaultAuthTimeout)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            cfg.Endpoints,
		Username:             cfg.Username,
		Password:             cfg.Password,
		TLS:                  cfg.TLS,
		DialTimeout:          authTimeout,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		Logger:               logger,
		DialOptions: append([]grpc.DialOption{
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
				MinConnectTimeout: 2 * time.Second,
			}),
		}, extra...),
	})
	if err != nil {
		if cfg.Username != "" {
			return nil, fmt.Errorf("authenticate to etcd %v as %q: %w", cfg.Endpoints, cfg.Username, describeAuthError(err))
		}
		return nil, fmt.Errorf("etcd client for %v: %w", cfg.Endpoints, err)
	}
	return cli, nil
}

// dropCanceled keeps etcd's client from logging, as errors, calls that were
// cancelled on purpose. With a user, the client fetches a token before it
// opens every watch, and a watch closed as its client closes logs "getToken
// failed: context canceled": noise at the end of every client command.
func dropCanceled(core zapcore.Core) zapcore.Core { return canceledFilter{core} }

type canceledFilter struct{ zapcore.Core }

func (f canceledFilter) With(fields []zapcore.Field) zapcore.Core {
	return canceledFilter{f.Core.With(fields)}
}

func (f canceledFilter) Check(entry zapcore.Entry, checked *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if f.Enabled(entry.Level) {
		return checked.AddCore(entry, f)
	}
	return checked
}

func (f canceledFilter) Write(entry zapcore.Entry, fields []zapcore.Field) error {
	for _, field := range fields {
		if err, ok := field.Interface.(error); ok && field.Type == zapcore.ErrorType &&
			(errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled) {
			return nil
		}
	}
	return f.Core.Write(entry, fields)
}

// IsAuthError reports whether err is etcd refusing who the client is or
// what it may do: wrong user or password, no user where etcd requires one,
// or no permission on a key. Retrying with the same credentials cannot
// succeed, so a node treats such an error as fatal instead of retrying.
func IsAuthError(err error) bool {
	err = rpctypes.Error(err)
	return errors.Is(err, rpctypes.ErrAuthFailed) || errors.Is(err, rpctypes.ErrPermissionDenied) ||
		errors.Is(err, rpctypes.ErrUserEmpty) || errors.Is(err, rpctypes.ErrUserNotFound)
}

// describeAuthError adds what to do to etcd's terse errors.
func describeAuthError(err error) error {
	switch e := rpctypes.Error(err); {
	case errors.Is(e, rpctypes.ErrAuthFailed):
		return fmt.Errorf("authentication failed: wrong username or password: %w", err)
	case errors.Is(e, rpctypes.ErrUserEmpty):
		return fmt.Errorf("etcd requires a user, and none was given: %w", err)
	case errors.Is(e, rpctypes.ErrPermissionDenied):
		return fmt.Errorf("permission denied: the user's role must allow this: %w", err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("no answer from etcd (out of reach, or a TLS handshake that fails?): %w", err)
	}
	return err
}

// CheckAccess asks etcd whether the client may do what a node does: write
// key and read every key under prefix. It changes nothing: the write sits in
// a transaction whose condition (a version below zero) never holds, and etcd
// checks the permissions of every operation of a transaction, whichever
// branch runs. An answer that is not an access error (etcd out of reach)
// comes back as it is, for the caller to decide.
func CheckAccess(ctx context.Context, cli *clientv3.Client, key, prefix string) error {
	_, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.Version(key), "<", 0)).
		Then(clientv3.OpPut(key, "")).
		Else(clientv3.OpGet(prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())).
		Commit()
	if err != nil {
		if IsAuthError(err) {
			return fmt.Errorf("write %s and read %s: %w", key, prefix, describeAuthError(err))
		}
		return fmt.Errorf("check access to %s: %w", key, err)
	}
	return nil
}
