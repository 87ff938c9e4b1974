package localetcd

import (
	"context"
	"crypto/tls"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// User is a user for EnableAuth. It gets a role of the same name that may
// read and write the keys under Prefixes, and nothing else.
type User struct {
	Name, Password string
	Prefixes       []string
}

// EnableAuth turns on etcd's authentication, as an operator would: it adds
// the root user (which etcd requires before it enables authentication) with
// rootPassword, then users, then enables it. tlsCfg is how to reach a
// server started with ClientTLS; nil for plain HTTP.
func (s *Server) EnableAuth(ctx context.Context, tlsCfg *tls.Config, rootPassword string, users ...User) error {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{s.ClientURL()}, TLS: tlsCfg})
	if err != nil {
		return fmt.Errorf("enable auth: %w", err)
	}
	defer cli.Close()
	if _, err := cli.UserAdd(ctx, "root", rootPassword); err != nil {
		return fmt.Errorf("enable auth: add root: %w", err)
	}
	if _, err := cli.UserGrantRole(ctx, "root", "root"); err != nil {
		return fmt.Errorf("enable auth: grant root the root role: %w", err)
	}
	for _, u := range users {
		if _, err := cli.RoleAdd(ctx, u.Name); err != nil {
			return fmt.Errorf("enable auth: add role %s: %w", u.Name, err)
		}
		for _, prefix := range u.Prefixes {
			end := clientv3.GetPrefixRangeEnd(prefix)
			if _, err := cli.RoleGrantPermission(ctx, u.Name, prefix, end, clientv3.PermissionType(clientv3.PermReadWrite)); err != nil {
				return fmt.Errorf("enable auth: let role %s read and write %s: %w", u.Name, prefix, err)
			}
		}
		if _, err := cli.UserAdd(ctx, u.Name, u.Password); err != nil {
			return fmt.Errorf("enable auth: add user %s: %w", u.Name, err)
		}
		if _, err := cli.UserGrantRole(ctx, u.Name, u.Name); err != nil {
			return fmt.Errorf("enable auth: grant user %s its role: %w", u.Name, err)
		}
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		return fmt.Errorf("enable auth: %w", err)
	}
	return nil
}
