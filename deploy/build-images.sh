#!/usr/bin/env bash
# Builds every image deploy/docker-compose.yml uses, without pulling anything
# from any registry:
#
#   routeguide/node:dev        cmd/node, and grpc-health-probe for its healthcheck
#   routeguide/client:dev      cmd/client
#   routeguide/etcd:dev        etcd and etcdctl, from etcd's Go module at the
#                              version go.mod requires (deploy/etcd/build)
#   routeguide/prometheus:dev  Prometheus from Debian's package, with the libraries it links
#                              and its web UI (/usr/share/prometheus/web, links resolved)
#   routeguide/jaeger:dev      Jaeger all-in-one, from its Go module (compose profile tracing)
#
# The Go binaries are built here, static (CGO_ENABLED=0); each image is FROM
# scratch (deploy/Dockerfile.prebuilt), runs as 65532:65532, and holds nothing
# but them. After it, `bash deploy/compose -f deploy/docker-compose.yml up -d`
# (docker compose or docker-compose) pulls nothing. Re-runs are quick: Go's build cache and
# Docker's layer cache make an unchanged image a no-op.
#
# Needs: go, docker, and Debian's apt. It takes /usr/bin/prometheus and
# /usr/share/prometheus/web when the prometheus package is installed;
# otherwise it unpacks the package and the libjs-* and fonts-* packages its UI
# links into (apt-get download, then dpkg-deb -x: nothing is installed, no
# service started).
# Usage: bash deploy/build-images.sh [target...]
# Targets: node client etcd prometheus jaeger (all when none is given); the
# Kubernetes test takes all but jaeger, the slowest to build from cold.
set -euo pipefail
trap 'echo "build-images.sh: FAILED (line $LINENO: $BASH_COMMAND)" >&2' ERR

# The one place the health probe's version is pinned for this script;
# deploy/Dockerfile has the same (TestPinnedVersionsAgree checks it).
GRPC_HEALTH_PROBE_VERSION=v0.4.61
# Likewise Jaeger's (the v1 module's jaeger command: the v2, collector-based
# all-in-one).
JAEGER_VERSION=v1.76.0
# The tag of every image: dev, unless ROUTEGUIDE_IMAGE_TAG says otherwise
# (docker-stack.yml reads the same variable).
TAG=${ROUTEGUIDE_IMAGE_TAG:-dev}

cd "$(dirname "$0")/.."
root=$PWD
targets=" ${*:-node client etcd prometheus jaeger} "
wants() { [[ $targets == *" $1 "* ]]; }
for t in $targets; do
  case $t in node | client | etcd | prometheus | jaeger) ;; *) echo "build-images.sh: unknown target $t" >&2; exit 2 ;; esac
done

say() { printf '\n==> %s\n' "$*"; }
die() { echo "build-images.sh: $*" >&2; exit 1; }

command -v go >/dev/null || PATH="/usr/local/go/bin:$PATH"
command -v go >/dev/null || die "go is not on PATH (nor in /usr/local/go/bin)"
command -v docker >/dev/null || die "docker is not on PATH"
docker info >/dev/null 2>&1 || die "docker info fails: is the Docker daemon running, and may this user use it?"
command -v ldd >/dev/null || die "ldd is not on PATH"

# etcd: the build module must pin the version the routeguide module uses.
etcd_version=$(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)
for mod in go.etcd.io/etcd/server/v3 go.etcd.io/etcd/etcdctl/v3; do
  pinned=$(cd deploy/etcd/build && go list -m -f '{{.Version}}' "$mod")
  if [ "$pinned" != "$etcd_version" ]; then
    die "deploy/etcd/build pins $mod $pinned, but go.mod requires go.etcd.io/etcd/server/v3 $etcd_version. Align them:
  (cd deploy/etcd/build && go mod edit -require=go.etcd.io/etcd/server/v3@$etcd_version -require=go.etcd.io/etcd/etcdctl/v3@$etcd_version && go mod tidy)"
  fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/routeguide-images.XXXXXX")
trap 'rm -rf "$work"' EXIT
ctx=$work/context # the build context: only what the images hold
mkdir -p "$ctx"/{node,client,etcd,prometheus,jaeger,empty} "$work/deb"

export CGO_ENABLED=0 GOOS=linux
gobuild=(go build -trimpath -buildvcs=false -ldflags='-s -w')

say "go build: node, client (routeguide $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
"${gobuild[@]}" -o "$ctx/node/node" ./cmd/node
"${gobuild[@]}" -o "$ctx/client/client" ./cmd/client

say "go install: github.com/grpc-ecosystem/grpc-health-probe@$GRPC_HEALTH_PROBE_VERSION"
GOBIN="$ctx/node" go install -trimpath -buildvcs=false -ldflags='-s -w' \
  "github.com/grpc-ecosystem/grpc-health-probe@$GRPC_HEALTH_PROBE_VERSION"

say "go build: etcd, etcdctl $etcd_version (deploy/etcd/build)"
(cd deploy/etcd/build && "${gobuild[@]}" -o "$ctx/etcd/" ./cmd/etcd ./cmd/etcdctl)

# Built in its own module directory, as its own main module: its go.mod has
# a replace directive, which `go install module@version` refuses. Outside
# ours ($work), so that routeguide's go.mod and go.sum stay as they are. A
# cold build (download and compile) takes minutes; later ones hit Go's caches.
if wants jaeger; then
  say "go build: jaeger $JAEGER_VERSION (github.com/jaegertracing/jaeger/cmd/jaeger)"
  jaeger_dir=$(cd "$work" && go mod download -json "github.com/jaegertracing/jaeger@$JAEGER_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -n "$jaeger_dir" ] || die "go mod download github.com/jaegertracing/jaeger@$JAEGER_VERSION gave no directory"
  (cd "$jaeger_dir" && "${gobuild[@]}" -o "$ctx/jaeger/jaeger" ./cmd/jaeger)
fi

# Debian's prometheus serves its web UI from /usr/share/prometheus/web, a path
# built into the binary; most of it is links into the libjs-* and fonts-*
# packages it depends on.
web_debs() {
  apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances prometheus | grep -E '^(libjs-|fonts-)' | sort -u
}
if [ -x /usr/bin/prometheus ] && [ -d /usr/share/prometheus/web/templates ]; then
  prometheus=/usr/bin/prometheus
  web=/usr/share/prometheus/web
  prometheus_version=$(dpkg-query -W -f='${Version}' prometheus 2>/dev/null || echo unknown)
  say "prometheus $prometheus_version: $prometheus (installed), its web UI and the libraries ldd lists"
else
  say "prometheus: not installed; unpacking Debian's package and its UI's (apt-get download)"
  download() { (cd "$work/deb" && apt-get download prometheus $(web_debs)); }
  if ! download; then
    [ "$(id -u)" = 0 ] || die "apt-get download prometheus failed; run apt-get update (as root), or apt-get install prometheus"
    apt-get update -qq
    download || die "apt-get download prometheus failed"
  fi
  for deb in "$work"/deb/*.deb; do dpkg-deb -x "$deb" "$work/deb/root"; done
  deb=$(echo "$work"/deb/prometheus_*.deb)
  prometheus=$work/deb/root/usr/bin/prometheus
  web=$work/deb/root/usr/share/prometheus/web
  prometheus_version=$(dpkg-deb -f "$deb" Version)
  say "prometheus $prometheus_version: $(basename "$deb"), its web UI and the libraries ldd lists"
fi
libs=$(ldd "$prometheus") || die "ldd $prometheus failed"
if grep -q 'not found' <<<"$libs"; then
  die "ldd $prometheus: a library is missing:
$libs"
fi
mkdir -p "$ctx/prometheus/usr/bin" "$ctx/prometheus/usr/share/prometheus/web"
cp "$prometheus" "$ctx/prometheus/usr/bin/prometheus"
echo "  /usr/bin/prometheus"
# The links resolved; moment-timezone's raw data (200 MB) is not what the
# pages load.
tar -C "$web" -ch --exclude=./static/moment-timezone/data . | tar -C "$ctx/prometheus/usr/share/prometheus/web" -x
[ -f "$ctx/prometheus/usr/share/prometheus/web/templates/_base.html" ] || die "$web holds no templates/_base.html: the UI would answer 500"
echo "  /usr/share/prometheus/web ($(du -sh "$ctx/prometheus/usr/share/prometheus/web" | cut -f1))"
for f in $(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$libs"); do
  cp -L --parents "$f" "$ctx/prometheus/"
  echo "  $f"
done

build() {
  local target=$1
  shift
  wants "$target" || return 0
  say "docker build: routeguide/$target:$TAG"
  docker build --target "$target" -t "routeguide/$target:$TAG" "$@" \
    -f "$root/deploy/Dockerfile.prebuilt" "$ctx"
}
# The legacy builder (no BuildKit) builds every stage up to the target, so
# the prometheus target gets the etcd stage's argument too, for its cache.
build node
build client
build etcd --build-arg "ETCD_VERSION=$etcd_version"
build prometheus --build-arg "ETCD_VERSION=$etcd_version" --build-arg "PROMETHEUS_VERSION=$prometheus_version"
build jaeger --build-arg "ETCD_VERSION=$etcd_version" --build-arg "PROMETHEUS_VERSION=$prometheus_version" \
  --build-arg "JAEGER_VERSION=$JAEGER_VERSION"

say "built:"
docker image ls --filter "reference=routeguide/*:$TAG" --format '{{.Repository}}:{{.Tag}}  {{.ID}}  {{.Size}}'
