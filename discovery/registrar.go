package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// ErrNodeIDTaken is returned when another live node, at another address,
// holds the key of the node id.
var ErrNodeIDTaken = errors.New("node id is taken")

// Registration describes a node to register.
type Registration struct {
	// Client reaches etcd. The Registrar does not close it.
	Client *clientv3.Client
	// Service is the name clients resolve, as in etcd:///<service>.
	Service string
	// Addr is the advertised gRPC address.
	Addr string
	// Metadata describes the node; Metadata.NodeID is required.
	Metadata Metadata
	// TTL is the lease TTL, rounded up to whole seconds.
	TTL time.Duration
	// Backoff spaces out attempts after a loss; zero means DefaultBackoff.
	Backoff Backoff
	// Logger receives the state changes; nil means slog.Default().
	Logger *slog.Logger
	// Events hears what the Registrar does; nil means nothing does.
	Events RegistrationEvents
}

// RegistrationEvents hears what a Registrar does, for metrics. Its methods
// must be cheap and safe for concurrent use.
type RegistrationEvents interface {
	// Registered is called after every successful registration.
	Registered()
	// Unregistered is called when the node's key stops being live, however
	// that happened (lease lost, key deleted, or Deregister).
	Unregistered()
	// KeptAlive is called for every keepalive response from etcd.
	KeptAlive()
	// LeaseLost is called when the lease's keepalive ends without the
	// Registrar ending it: the lease expired or was revoked, or etcd was out
	// of reach for longer than the TTL.
	LeaseLost()
}

// Key is the registry key of a node.
func (reg Registration) Key() string { return Prefix(reg.Service) + reg.Metadata.NodeID }

func (reg Registration) validate() error {
	switch {
	case reg.Client == nil:
		return errors.New("register: no etcd client")
	case reg.Service == "" || strings.Contains(reg.Service, "/"):
		return fmt.Errorf("register: service name %q must be non-empty and without '/', or one service's prefix would hold another's", reg.Service)
	case reg.Metadata.NodeID == "" || strings.Contains(reg.Metadata.NodeID, "/"):
		return fmt.Errorf("register: node id %q must be non-empty and without '/'", reg.Metadata.NodeID)
	case reg.TTL < time.Second:
		return fmt.Errorf("register: lease TTL %v is below etcd's minimum of 1s", reg.TTL)
	}
	if err := CheckAddr(reg.Addr, DialAddr); err != nil {
		return fmt.Errorf("register: advertised %w", err)
	}
	return nil
}

// Registrar keeps one node registered in etcd under a lease, from Start until
// Deregister. Whatever happens to the lease or the key (the lease expires,
// etcd is out of reach past the TTL, someone deletes the key) it registers
// the node again, with backoff, for as long as it runs: it never gives up.
type Registrar struct {
	reg    Registration
	key    string
	value  string
	logger *slog.Logger
	events RegistrationEvents

	cancel     context.CancelFunc
	done       chan struct{}
	registered chan struct{} // closed at the first registration
	failed     chan error    // receives the error that stopped the Registrar for good
	live       atomic.Bool
	listeners  sync.WaitGroup // the keepalive listeners of the sessions

	deregisterOnce sync.Once
	deregisterErr  error

	// Owned by the run goroutine until done is closed.
	session        *concurrency.Session
	everRegistered bool
	lastLease      clientv3.LeaseID // the lease of the last successful write
}

// StartRegistrar validates reg and starts registering in the background. A
// node id held by another live node is reported through Failed, if it is
// found before the first registration succeeds.
func StartRegistrar(reg Registration) (*Registrar, error) {
	if err := reg.validate(); err != nil {
		return nil, err
	}
	value, err := EncodeEndpoint(reg.Addr, reg.Metadata)
	if err != nil {
		return nil, fmt.Errorf("register: %w", err)
	}
	if reg.Backoff == (Backoff{}) {
		reg.Backoff = DefaultBackoff
	}
	logger := reg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	events := reg.Events
	if events == nil {
		events = nopRegistrationEvents{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Registrar{
		reg:        reg,
		key:        reg.Key(),
		value:      value,
		logger:     logger.With("key", reg.Key()),
		events:     events,
		cancel:     cancel,
		done:       make(chan struct{}),
		registered: make(chan struct{}),
		failed:     make(chan error, 1),
	}
	go r.run(ctx)
	return r, nil
}

// Registered is closed once the node has been registered for the first time.
func (r *Registrar) Registered() <-chan struct{} { return r.registered }

// Failed receives the error that stopped the Registrar before it could
// register at all: today only ErrNodeIDTaken. Call Deregister after it too,
// to release the lease.
func (r *Registrar) Failed() <-chan error { return r.failed }

// Live reports whether the node's key is live in etcd, as far as the
// Registrar knows.
func (r *Registrar) Live() bool { return r.live.Load() }

// Deregister stops the Registrar and revokes its lease, so that the key
// disappears at once rather than at the end of the TTL. It waits for the
// background goroutines, and for the revoke until ctx ends; when the revoke
// fails, the key goes when the lease expires. Later calls return the first
// call's result.
func (r *Registrar) Deregister(ctx context.Context) error {
	r.deregisterOnce.Do(func() { r.deregisterErr = r.deregister(ctx) })
	return r.deregisterErr
}

func (r *Registrar) deregister(ctx context.Context) error {
	r.cancel()
	<-r.done
	r.setLive(false)
	if r.session == nil {
		return nil
	}
	r.session.Orphan()
	r.listeners.Wait()
	if _, err := r.reg.Client.Revoke(ctx, r.session.Lease()); err != nil {
		return fmt.Errorf("deregister %s: revoke lease: %w", r.key, err)
	}
	r.logger.Info("deregistered")
	return nil
}

func (r *Registrar) setLive(live bool) {
	if r.live.Swap(live) == live {
		return
	}
	if live {
		r.events.Registered()
	} else {
		r.events.Unregistered()
	}
}

// run registers, waits until the registration is lost, and starts over.
func (r *Registrar) run(ctx context.Context) {
	defer close(r.done)
	var lastErr string
	for failures := 0; ; {
		err := r.registerAndHold(ctx, func() {
			r.everRegistered = true
			failures, lastErr = 0, ""
		})
		if ctx.Err() != nil {
			return
		}
		r.setLive(false)
		if errors.Is(err, ErrNodeIDTaken) && !r.everRegistered {
			r.logger.Error("cannot register", "error", err)
			r.failed <- err
			return
		}
		// Log each change of state once, not every retry.
		if msg := err.Error(); msg != lastErr {
			r.logger.Warn("not registered; retrying", "error", err)
			lastErr = msg
		}
		if !sleep(ctx, r.reg.Backoff.Delay(failures)) {
			return
		}
		failures++
	}
}

// registerAndHold makes sure there is a live session and the key is written
// under its lease, then waits until either is lost. It calls registered once
// the key is live.
func (r *Registrar) registerAndHold(ctx context.Context, registered func()) error {
	if r.session != nil {
		select {
		case <-r.session.Done():
			// Reported here, where every way of losing the lease ends up:
			// the keepalive may end while hold watches, or while it waits
			// for etcd after its watch failed.
			r.events.LeaseLost()
			r.session = nil
		default:
		}
	}
	if r.session == nil {
		session, err := r.newSession(ctx)
		if err != nil {
			return err
		}
		r.session = session
	}
	revision, err := r.put(ctx)
	if err != nil {
		return err
	}
	r.lastLease = r.session.Lease()
	r.setLive(true)
	registered()
	select {
	case <-r.registered:
		r.logger.Info("registered again", "lease", fmt.Sprintf("%x", r.session.Lease()))
	default:
		r.logger.Info("registered", "addr", r.reg.Addr, "lease", fmt.Sprintf("%x", r.session.Lease()))
		close(r.registered)
	}
	return r.hold(ctx, revision)
}

// newSession grants a lease and keeps it alive with etcd's concurrency
// package; a second keepalive listener on the same lease reports every
// keepalive response for metrics (etcd sends one request for both).
func (r *Registrar) newSession(ctx context.Context) (*concurrency.Session, error) {
	ttl := int64(math.Ceil(r.reg.TTL.Seconds()))
	// etcd's client waits for a connection instead of failing, so bound the grant.
	grantCtx, cancel := context.WithTimeout(ctx, r.reg.TTL)
	defer cancel()
	lease, err := r.reg.Client.Grant(grantCtx, ttl)
	if err != nil {
		return nil, fmt.Errorf("grant lease: %w", err)
	}
	// The session outlives this call and ends on Orphan, not with ctx.
	session, err := concurrency.NewSession(r.reg.Client, concurrency.WithLease(lease.ID),
		concurrency.WithTTL(int(ttl)), concurrency.WithContext(context.WithoutCancel(ctx)))
	if err != nil {
		return nil, fmt.Errorf("keep lease alive: %w", err)
	}
	kept, err := r.reg.Client.KeepAlive(session.Ctx(), lease.ID)
	if err == nil {
		// The channel closes when the session ends (Orphan, or the lease is lost).
		r.listeners.Add(1)
		go func() {
			defer r.listeners.Done()
			for range kept {
				r.events.KeptAlive()
			}
		}()
	}
	return session, nil
}

// put writes the key under the session's lease, unless another node holds it.
// It returns the revision of the write.
func (r *Registrar) put(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, r.reg.TTL)
	defer cancel()
	lease := r.session.Lease()
	resp, err := r.reg.Client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(r.key), "=", 0)).
		Then(clientv3.OpPut(r.key, r.value, clientv3.WithLease(lease))).
		Else(clientv3.OpGet(r.key)).
		Commit()
	if err != nil {
		return 0, fmt.Errorf("write %s: %w", r.key, err)
	}
	if resp.Succeeded {
		return resp.Header.Revision, nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 { // deleted between the compare and the get: try again
		return 0, fmt.Errorf("write %s: key changed during the write", r.key)
	}
	return r.takeOver(ctx, kvs[0])
}

// takeOver replaces a key that is already live when it is this node's own:
// written under this session's lease or this Registrar's last one (a lease
// the client gave up on while etcd still held it), or, before this Registrar
// has ever registered, by an earlier run of this node at the same address (a
// process restarted faster than its old lease expired). Anything else
// belongs to another node: never overwrite it. Once registered, not even a
// holder at the same address is taken over, or two processes with one id
// and one advertised name would overwrite each other's key forever.
func (r *Registrar) takeOver(ctx context.Context, held *mvccpb.KeyValue) (int64, error) {
	lease := r.session.Lease()
	heldLease := clientv3.LeaseID(held.Lease)
	if heldLease == lease && string(held.Value) == r.value {
		return held.ModRevision, nil
	}
	ours := heldLease == lease || (r.lastLease != clientv3.NoLease && heldLease == r.lastLease)
	if !ours {
		ep, err := DecodeEndpoint(r.key, held.Value)
		if r.everRegistered || err != nil || ep.Addr != r.reg.Addr {
			holder := "an unreadable value"
			if err == nil {
				holder = "a node at " + ep.Addr
			}
			return 0, fmt.Errorf("%w: %s is held by %s under another lease, and this node advertises %s", ErrNodeIDTaken, r.key, holder, r.reg.Addr)
		}
	}
	resp, err := r.reg.Client.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(r.key), "=", held.ModRevision)).
		Then(clientv3.OpPut(r.key, r.value, clientv3.WithLease(lease))).
		Commit()
	if err != nil {
		return 0, fmt.Errorf("take over %s: %w", r.key, err)
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("take over %s: key changed during the write", r.key)
	}
	r.logger.Info("took over a key this node wrote before", "old_lease", fmt.Sprintf("%x", held.Lease))
	return resp.Header.Revision, nil
}

// hold waits until the registration is lost: the session ends, or the key is
// deleted or overwritten. When the watch on the key fails (after a
// compaction, say) it checks the key and watches again from there.
func (r *Registrar) hold(ctx context.Context, revision int64) error {
	watchCtx, cancel := context.WithCancel(r.session.Ctx())
	defer cancel()
	for {
		watch := r.reg.Client.Watch(watchCtx, r.key, clientv3.WithRev(revision+1))
		err := r.watchKey(ctx, watch)
		if !errors.Is(err, errWatchFailed) {
			return err
		}
		getCtx, cancelGet := context.WithTimeout(ctx, r.reg.TTL)
		current, err := r.reg.Client.Get(getCtx, r.key)
		cancelGet()
		if err != nil {
			return fmt.Errorf("check %s after its watch failed: %w", r.key, err)
		}
		if len(current.Kvs) == 0 || clientv3.LeaseID(current.Kvs[0].Lease) != r.session.Lease() {
			return errKeyDeleted
		}
		revision = current.Header.Revision
	}
}

var (
	errLeaseLost   = errors.New("lease lost")
	errKeyDeleted  = errors.New("key deleted or overwritten by someone else")
	errWatchFailed = errors.New("watch failed")
)

func (r *Registrar) watchKey(ctx context.Context, watch clientv3.WatchChan) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.session.Done():
			return errLeaseLost
		case wresp, open := <-watch:
			if !open || wresp.Err() != nil {
				return errWatchFailed
			}
			for _, ev := range wresp.Events {
				if ev.Type == clientv3.EventTypeDelete || clientv3.LeaseID(ev.Kv.Lease) != r.session.Lease() {
					return errKeyDeleted
				}
			}
		}
	}
}

// sleep waits for d, or until ctx ends; it reports whether it waited.
func sleep(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

type nopRegistrationEvents struct{}

func (nopRegistrationEvents) Registered()   {}
func (nopRegistrationEvents) Unregistered() {}
func (nopRegistrationEvents) KeptAlive()    {}
func (nopRegistrationEvents) LeaseLost()    {}
