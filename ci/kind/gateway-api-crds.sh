#!/usr/bin/env bash
# The Gateway API's standard CRDs (HTTPRoute...) as the project publishes them, from its Go module
# (sigs.k8s.io/gateway-api at GATEWAY_API_VERSION below, through the Go module proxy: no registry, and
# nothing copied into this repository). Prints the directory holding the CRD manifests.
#   VERITAS_GATEWAY_API_CRDS=$(ci/kind/gateway-api-crds.sh)
. "$(dirname "$0")/lib.sh"
# Pinned here, not in versions.env: every kind cache key hashes that file.
GATEWAY_API_VERSION=v1.6.3
module="sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION"
dir=$(cd "$CACHE" && go mod download -json "$module" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -n "$dir" ] || die "go mod download $module gave no directory (is the Go module proxy reachable?)"
crds="$dir/config/crd/standard"
[ -f "$crds/gateway.networking.k8s.io_httproutes.yaml" ] || die "$module has no $crds/gateway.networking.k8s.io_httproutes.yaml"
echo "$crds"
