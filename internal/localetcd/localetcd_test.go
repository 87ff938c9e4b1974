package localetcd

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestStartServesClientsAndKeepsDataAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	s, err := Start(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	addr := s.ClientAddr()
	put(t, s.ClientURL(), "k", "v")
	s.Close()
	s, err = Start(Config{Dir: dir, ClientAddr: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := get(t, s.ClientURL(), "k"); got != "v" {
		t.Errorf("after a restart, k = %q, want v", got)
	}
}

func put(t *testing.T, url, k, v string) {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, k, v); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, url, k string) string {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return ""
	}
	return string(resp.Kvs[0].Value)
}
