#!/usr/bin/env bash
# Brings up the secured cluster of deploy/docker-compose.tls.yml, as project
# routeguide-tls (ROUTEGUIDE_TLS_PROJECT to change it):
#
#   1. writes the CA, certificates, keys and passwords into deploy/tls/out
#      (go run ./deploy/tls), unless they are there; ROUTEGUIDE_TLS_DIR names
#      another directory, which the override then mounts instead;
#   2. starts the three etcd members and waits until they are healthy;
#   3. unless etcd's authentication is on already: adds the users root,
#      node (read and write under routeguide/) and client (read only), and
#      turns authentication on. etcdctl reads each password from its stdin,
#      from the file, so that no password is ever on a command line;
#   4. starts the rest: `up -d` with this script's arguments (--scale node=3).
#
# Runs Compose through deploy/compose: `docker compose` when the plugin is
# there, else docker-compose (ROUTEGUIDE_COMPOSE chooses).
set -euo pipefail
# Compose reads a relative path in the override from deploy/: make it
# absolute, from where this script was started, for both.
if [ -n "${ROUTEGUIDE_TLS_DIR:-}" ]; then
  case $ROUTEGUIDE_TLS_DIR in
    /*) ;;
    *) ROUTEGUIDE_TLS_DIR=$PWD/$ROUTEGUIDE_TLS_DIR ;;
  esac
  export ROUTEGUIDE_TLS_DIR
fi
cd "$(dirname "$0")/../.."

compose=(bash deploy/compose)
project=${ROUTEGUIDE_TLS_PROJECT:-routeguide-tls}
out=${ROUTEGUIDE_TLS_DIR:-deploy/tls/out}

c() { "${compose[@]}" -p "$project" -f deploy/docker-compose.yml -f deploy/docker-compose.tls.yml "$@"; }
ctl() { c exec -T etcd1 /usr/local/bin/etcdctl "$@"; }

[ -f "$out/ca.pem" ] || go run ./deploy/tls -out "$out"

c up -d etcd1 etcd2 etcd3
for _ in $(seq 90); do
  if ctl endpoint health --cluster >/dev/null 2>&1; then break; fi
  sleep 1
done
ctl endpoint health --cluster

# The status is read whole before it is searched: `ctl auth status | grep -q`
# under pipefail fails whenever grep, done at the first line, closes the pipe
# before compose has written the second, and the script then took a cluster
# with authentication on for a new one.
auth_status=$(ctl auth status)
if grep -q 'Authentication Status: true' <<<"$auth_status"; then
  echo "etcd authentication is on already"
else
  ctl user add root --interactive=false <"$out/etcd-root-password"
  ctl user grant-role root root
  ctl role add routeguide-node
  ctl role grant-permission routeguide-node --prefix=true readwrite routeguide/
  # RouteChat notes, shared by the nodes beside the registry.
  ctl role grant-permission routeguide-node --prefix=true readwrite routeguide-notes/
  ctl user add node --interactive=false <"$out/etcd-node-password"
  ctl user grant-role node routeguide-node
  ctl role add routeguide-client
  ctl role grant-permission routeguide-client --prefix=true read routeguide/
  ctl user add client --interactive=false <"$out/etcd-client-password"
  ctl user grant-role client routeguide-client
  ctl auth enable
fi

c up -d "$@"
