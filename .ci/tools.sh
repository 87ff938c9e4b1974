# Sourced by the scripts in .ci: puts Go and the Go tools on PATH, and installs
# the pinned code generators when they are missing or at another version.
# The versions here are the only place they are pinned.
BUF_VERSION=v1.75.0
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2

export PATH="/usr/local/go/bin:$PATH"
export PATH="$(go env GOPATH)/bin:$PATH"

install_tools() {
  local stamp
  stamp="$(go env GOPATH)/bin/.routeguide-tools-$BUF_VERSION-$PROTOC_GEN_GO_VERSION-$PROTOC_GEN_GO_GRPC_VERSION"
  if [ -f "$stamp" ] && command -v buf protoc-gen-go protoc-gen-go-grpc >/dev/null; then
    return
  fi
  echo "installing buf $BUF_VERSION, protoc-gen-go $PROTOC_GEN_GO_VERSION, protoc-gen-go-grpc $PROTOC_GEN_GO_GRPC_VERSION"
  go install "github.com/bufbuild/buf/cmd/buf@$BUF_VERSION"
  go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
  go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"
  touch "$stamp"
}
