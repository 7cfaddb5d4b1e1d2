#!/usr/bin/env bash
# Install Veritas into the running kind cluster: our images (built by build-veritas-images.sh,
# from the debug binaries the tests already built when VERITAS_BIN_DIR is set, else release),
# the CRDs, and the controller (namespace veritas-system) watching every namespace, then wait
# for the controller.
# Env: CLUSTER_NAME, KUBECONFIG (default: the cluster's kubeconfig in the cache).
. "$(dirname "$0")/lib.sh"
REPO="$(cd "$KIND_DIR/../.." && pwd)"
KUBECTL="$BIN/kubectl-$K8S_VERSION"
export KUBECONFIG="${KUBECONFIG:-$CACHE/kubeconfig-$CLUSTER_NAME}"
t=$(now)
if [ -n "${VERITAS_BIN_DIR:-}" ]; then
  "$KIND_DIR/build-veritas-images.sh" --no-build
else
  "$KIND_DIR/build-veritas-images.sh"
fi
"$KUBECTL" apply --server-side -f "$REPO/fixtures/manifests/crds/" >&2
"$KUBECTL" wait --for=condition=Established --timeout=60s crd/veritascanaries.veritas.hearthlink.ai crd/veritasenvironments.veritas.hearthlink.ai >&2
# Cluster-wide: the harness makes a namespace per scenario. The default install's one watched
# namespace (controller/11-watch-namespace.yaml) is left out, and undone if an earlier install
# applied it.
controller_files=()
for f in "$REPO"/fixtures/manifests/controller/*.yaml; do
  case $f in */11-watch-namespace.yaml) continue ;; esac
  controller_files+=(-f "$f")
done
"$KUBECTL" apply --server-side "${controller_files[@]}" -f "$REPO/fixtures/manifests/controller-cluster-wide/" >&2 \
  || die "controller manifests did not apply"
"$KUBECTL" -n veritas-system delete configmap veritas-controller-scope --ignore-not-found >&2
"$KUBECTL" -n veritas delete rolebinding veritas-controller --ignore-not-found >&2
# The image keeps its :dev tag across builds, so a rebuilt controller would not roll out by
# itself: the image's ID in the pod template rolls it exactly when the image changed.
image_id=$(docker image inspect -f '{{.Id}}' veritas.local/veritas-controller:dev)
"$KUBECTL" -n veritas-system patch deployment veritas-controller --type merge \
  -p "{\"spec\":{\"template\":{\"metadata\":{\"annotations\":{\"veritas.hearthlink.ai/image-id\":\"$image_id\"}}}}}" >&2
"$KUBECTL" -n veritas-system rollout status deployment/veritas-controller --timeout=180s >&2 \
  || die "veritas-controller not ready within 180s (kubectl -n veritas-system logs -l app=veritas-controller)"
timing "install-veritas" "$t"
