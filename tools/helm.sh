#!/usr/bin/env bash
# Prints the path of a helm binary of the pinned version, installing it first if needed:
#   tools/helm.sh            -> .tools/bin/helm (built by `go install` on first use, then cached)
#   tools/helm.sh lint ...   -> runs that helm command instead
# Needs only Go and the Go module proxy. The version is pinned here; the binary lives in the
# project (.tools/bin, ignored by git) so a re-run does not reinstall and nothing global changes.
set -euo pipefail
HELM_VERSION="v3.22.0"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$here/.tools/bin"
helm="$bin/helm"
stamp="$bin/.helm-$HELM_VERSION"
if [ ! -x "$helm" ] || [ ! -f "$stamp" ]; then
  if ! command -v go >/dev/null 2>&1; then
    echo "tools/helm.sh: Go is needed to install helm $HELM_VERSION but \`go\` is not on PATH" >&2
    exit 1
  fi
  mkdir -p "$bin"
  echo "tools/helm.sh: installing helm $HELM_VERSION into $bin (go install, once)" >&2
  # A private build: the module cache and build cache stay Go's own; only GOBIN is ours.
  GOBIN="$bin" GOFLAGS="-buildvcs=false" CGO_ENABLED=0 \
    go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
  rm -f "$bin"/.helm-v*
  touch "$stamp"
fi
if [ "$#" -eq 0 ]; then
  echo "$helm"
else
  exec "$helm" "$@"
fi
