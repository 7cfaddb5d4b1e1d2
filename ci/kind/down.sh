#!/usr/bin/env bash
# Delete the offline kind cluster (images and build caches are kept).
. "$(dirname "$0")/lib.sh"
KIND="$BIN/kind-$KIND_VERSION"
[ -x "$KIND" ] || { log "kind not built; nothing to delete"; exit 0; }
if "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
  "$KIND" delete cluster --name "$CLUSTER_NAME" --kubeconfig "$CACHE/kubeconfig-$CLUSTER_NAME"
else
  log "no cluster named $CLUSTER_NAME"
fi
