#!/usr/bin/env bash
# Build every container image the offline kind cluster needs, under the exact names kind and
# kubeadm expect, from Debian packages (debootstrap) and the binaries of build-binaries.sh.
# Then assemble the node image by hand (what `kind build node-image` does, minus registry pulls).
# Idempotent: an image that exists with the current key label is not rebuilt.
. "$(dirname "$0")/lib.sh"
RECIPE_KEY=$(recipe_key "$KIND_DIR/build-images.sh" "$KIND_DIR/lib.sh" "$KIND_DIR/images")

MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ROOTFS="$CACHE/rootfs"
mkdir -p "$ROOTFS"
KIND_SRC=$(go mod download -json "sigs.k8s.io/kind@$KIND_VERSION" | jq -r .Dir)
[ -d "$KIND_SRC/images/base/files" ] || die "kind module source not found at $KIND_SRC"

# image_key IMAGE: the veritas.key label of a local image ("" if absent).
image_key() { docker image inspect -f '{{index .Config.Labels "veritas.key"}}' "$1" 2>/dev/null || true; }
up_to_date() { [ "$(image_key "$1")" = "$2-$RECIPE_KEY" ]; }

# debootstrap_rootfs NAME PACKAGES(comma list): a minbase bookworm rootfs, cached by package list.
debootstrap_rootfs() {
  local name=$1 pkgs=$2 dir="$ROOTFS/$1" key
  key=$(echo "$DEBIAN_SUITE $pkgs" | sha256sum | cut -c1-16)
  if [ -f "$dir.key" ] && [ "$(cat "$dir.key")" = "$key" ]; then echo "$dir"; return 0; fi
  local t; t=$(now)
  rm -rf "$dir" "$dir.key"
  log "debootstrap $name ($pkgs)"
  debootstrap --variant=minbase --include="$pkgs" "$DEBIAN_SUITE" "$dir" "$MIRROR" >"$LOGS/debootstrap-$name.log" 2>&1 \
    || die "debootstrap $name failed, see $LOGS/debootstrap-$name.log"
  chroot "$dir" apt-get clean
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/log/*.log
  echo "$key" > "$dir.key"
  timing "debootstrap $name" "$t"
  echo "$dir"
}

# docker_build IMAGE KEY CONTEXTDIR: legacy builder (no registry access needed for local FROM).
docker_build() {
  local img=$1 key=$2 ctx=$3 t; t=$(now)
  DOCKER_BUILDKIT=0 docker build -q --label "veritas.key=$key-$RECIPE_KEY" -t "$img" "$ctx" >"$LOGS/docker-build.log" 2>&1 \
    || { cat "$LOGS/docker-build.log" >&2; die "docker build $img failed"; }
  timing "image $img" "$t"
}

# ---------------------------------------------------------------------------------------------
# 1. Debian tools image (iptables/nftables/ipset/conntrack) for kube-proxy and kindnet, and a
#    minimal static base (passwd, group, CA certificates, /tmp) for the static Go binaries.
build_tools_images() {
  local pkgs="iptables,nftables,ipset,iproute2,conntrack,ca-certificates,kmod"
  local key; key="tools-$(echo "$DEBIAN_SUITE $pkgs" | cat - "$KIND_DIR/images/iptables-wrapper.sh" | sha256sum | cut -c1-16)"
  if ! up_to_date "$TOOLS_IMAGE" "$key"; then
    local dir; dir=$(debootstrap_rootfs tools "$pkgs")
    install -m 0755 "$KIND_DIR/images/iptables-wrapper.sh" "$dir/usr/sbin/iptables-wrapper"
    local l; for l in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
      ln -sf iptables-wrapper "$dir/usr/sbin/$l"
    done
    tar -C "$dir" -c . | docker import --change "LABEL veritas.key=$key-$RECIPE_KEY" - "$TOOLS_IMAGE" >/dev/null
  fi
  if ! up_to_date veritas.local/static-base:1 "$key"; then
    local s="$CACHE/ctx/static-base" dir="$ROOTFS/tools"
    rm -rf "$s"; mkdir -p "$s/etc/ssl/certs" "$s/tmp"
    chmod 1777 "$s/tmp"
    cp "$dir/etc/passwd" "$dir/etc/group" "$dir/etc/nsswitch.conf" "$s/etc/"
    cp "$dir/etc/ssl/certs/ca-certificates.crt" "$s/etc/ssl/certs/"
    tar -C "$s" -c . | docker import --change "LABEL veritas.key=$key-$RECIPE_KEY" - veritas.local/static-base:1 >/dev/null
  fi
}

# static_image IMAGE BINARY DEST [ENTRYPOINT-JSON]: static-base + one binary.
static_image() {
  local img=$1 bin=$2 dest=$3 ep=${4:-}
  local key; key="$(sha256sum "$bin" | cut -c1-16)-${ep}"
  up_to_date "$img" "$key" && return 0
  local ctx="$CACHE/ctx/$(echo "$img" | tr '/:' '__')"
  rm -rf "$ctx"; mkdir -p "$ctx"; cp "$bin" "$ctx/bin"
  { echo "FROM veritas.local/static-base:1"
    echo "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin"
    echo "COPY bin $dest"
    [ -n "$ep" ] && echo "ENTRYPOINT $ep"
  } > "$ctx/Dockerfile"
  docker_build "$img" "$key" "$ctx"
}

build_component_images() {
  local b
  for b in kube-apiserver kube-controller-manager kube-scheduler; do
    static_image "registry.k8s.io/$b:$K8S_VERSION" "$BIN/$b-$K8S_VERSION" "/usr/local/bin/$b"
  done
  static_image "registry.k8s.io/etcd:$ETCD_IMAGE_TAG" "$BIN/etcd-$ETCD_VERSION" /usr/local/bin/etcd
  static_image "registry.k8s.io/coredns/coredns:$COREDNS_VERSION" "$BIN/coredns-$COREDNS_VERSION" /coredns '["/coredns"]'
  static_image "registry.k8s.io/pause:$PAUSE_VERSION" "$BIN/pause-$PAUSE_VERSION" /pause '["/pause"]'
  docker tag "registry.k8s.io/pause:$PAUSE_VERSION" "registry.k8s.io/pause:$PAUSE_VERSION_KUBEADM"
  static_image "$LOCAL_PATH_PROVISIONER_IMAGE" "$BIN/local-path-provisioner-$LOCAL_PATH_PROVISIONER_VERSION" \
    /usr/local/bin/local-path-provisioner
  # kube-proxy needs iptables/conntrack: Debian tools image + binary.
  local key img="registry.k8s.io/kube-proxy:$K8S_VERSION"
  key="$(sha256sum "$BIN/kube-proxy-$K8S_VERSION" | cut -c1-16)-$(image_key "$TOOLS_IMAGE")"
  if ! up_to_date "$img" "$key"; then
    local ctx="$CACHE/ctx/kube-proxy"; rm -rf "$ctx"; mkdir -p "$ctx"
    cp "$BIN/kube-proxy-$K8S_VERSION" "$ctx/kube-proxy"
    printf 'FROM %s\nCOPY kube-proxy /usr/local/bin/kube-proxy\n' "$TOOLS_IMAGE" > "$ctx/Dockerfile"
    docker_build "$img" "$key" "$ctx"
  fi
  # local-path-helper: runs `sh -c` with mkdir/rm/chmod; Debian busybox-static is enough.
  build_busybox_image "$LOCAL_PATH_HELPER_IMAGE"
  # kindnet: our CNI config + routes script and kube-router's NetworkPolicy firewall.
  img=$KINDNET_IMAGE
  key="$(cat "$KIND_DIR/images/kindnet/kindnetd.sh" "$BIN/kube-router-$KUBE_ROUTER_VERSION" "$BIN/kubectl-$K8S_VERSION" | sha256sum | cut -c1-16)-$(image_key "$TOOLS_IMAGE")"
  if ! up_to_date "$img" "$key"; then
    local ctx="$CACHE/ctx/kindnet"; rm -rf "$ctx"; mkdir -p "$ctx"
    cp "$BIN/kube-router-$KUBE_ROUTER_VERSION" "$ctx/kube-router"
    cp "$BIN/kubectl-$K8S_VERSION" "$ctx/kubectl"
    cp "$KIND_DIR/images/kindnet/kindnetd.sh" "$ctx/kindnetd"
    printf 'FROM %s\nCOPY kube-router kubectl /usr/local/bin/\nCOPY kindnetd /bin/kindnetd\nENTRYPOINT ["/bin/kindnetd"]\n' "$TOOLS_IMAGE" > "$ctx/Dockerfile"
    docker_build "$img" "$key" "$ctx"
  fi
}

# build_busybox_image IMAGE: Debian busybox-static with its applets linked in /bin.
build_busybox_image() {
  local img=$1 deb="$CACHE/debs"
  mkdir -p "$deb"
  if ! ls "$deb"/busybox-static_*.deb >/dev/null 2>&1; then
    ( cd "$deb" && apt-get download busybox-static >/dev/null ) || die "apt-get download busybox-static failed"
  fi
  local key; key=$(sha256sum "$deb"/busybox-static_*.deb | cut -c1-16)
  up_to_date "$img" "$key" && return 0
  local ctx="$CACHE/ctx/busybox"; rm -rf "$ctx"; mkdir -p "$ctx/x" "$ctx/root/bin" "$ctx/root/tmp" "$ctx/root/etc"
  dpkg-deb -x "$deb"/busybox-static_*.deb "$ctx/x"
  cp "$ctx/x/bin/busybox" "$ctx/root/bin/busybox"
  for a in $("$ctx/root/bin/busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$ctx/root/bin/$a"; done
  chmod 1777 "$ctx/root/tmp"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$ctx/root/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' > "$ctx/root/etc/group"
  tar -C "$ctx/root" -c . | docker import --change "LABEL veritas.key=$key-$RECIPE_KEY" \
    --change 'ENV PATH=/bin' --change 'CMD ["sh"]' - "$img" >/dev/null
}

# ---------------------------------------------------------------------------------------------
# 2. kind base image: Debian + systemd + containerd/runc/CNI plugins from Debian + kind's base files
#    (taken from the kind module source in the Go module cache, not copied into this repo).
build_base_image() {
  local pkgs="systemd,dbus,${NODE_DEBIAN_PACKAGES// /,}"
  local key; key="base-$(echo "$KIND_VERSION $DEBIAN_SUITE $pkgs oom-restrict" | sha256sum | cut -c1-16)"
  up_to_date "$BASE_IMAGE" "$key" && return 0
  local t; t=$(now)
  local src; src=$(debootstrap_rootfs base "$pkgs")
  local dir="$ROOTFS/base-work"
  rm -rf "$dir"; cp -a "$src" "$dir"
  local f="$KIND_SRC/images/base/files"
  install -m 0755 "$f"/usr/local/bin/* "$dir/usr/local/bin/"
  mkdir -p "$dir/kind/bin" "$dir/etc/containerd" "$dir/etc/systemd/system/kubelet.service.d" "$dir/etc/kubernetes/manifests"
  cp "$f"/kind/README.txt "$dir/kind/" 2>/dev/null || true
  install -m 0755 "$f"/kind/bin/* "$dir/kind/bin/"
  install -m 0644 "$f"/etc/crictl.yaml "$dir/etc/"
  install -m 0644 "$f"/etc/containerd/config.toml "$dir/etc/containerd/"
  # Without CAP_SYS_RESOURCE no process may lower its oom_score_adj, so runc fails every pod
  # kubelet gives a negative score ("can't get final child's PID from pipe: EOF"). Let
  # containerd clamp scores to its own instead (what kind's entrypoint does for rootless nodes).
  sed -i 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' "$dir/etc/containerd/config.toml"
  grep -q 'restrict_oom_score_adj = true' "$dir/etc/containerd/config.toml" || die "could not set restrict_oom_score_adj"
  install -m 0644 -D "$f"/etc/default/kubelet "$dir/etc/default/kubelet"
  install -m 0644 "$f"/etc/sysctl.d/* "$dir/etc/sysctl.d/"
  install -m 0644 "$f"/etc/systemd/system/*.service "$f"/etc/systemd/system/*.slice "$dir/etc/systemd/system/"
  install -m 0644 "$f"/etc/systemd/system/kubelet.service.d/* "$dir/etc/systemd/system/kubelet.service.d/"
  # Debian puts containerd in /usr/bin and the CNI plugins in /usr/lib/cni; kind expects
  # /usr/local/bin/containerd and /opt/cni/bin.
  ln -sf /usr/bin/containerd "$dir/usr/local/bin/containerd"
  mkdir -p "$dir/opt/cni"; rm -rf "$dir/opt/cni/bin"; ln -s /usr/lib/cni "$dir/opt/cni/bin"
  chroot "$dir" /bin/sh -ec '
    find /lib/systemd/system/sysinit.target.wants/ -name "systemd-tmpfiles-setup.service" -delete
    rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \
      /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \
      /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/*
    echo "ReadKMsg=no" >> /etc/systemd/journald.conf
    ln -sf /usr/lib/systemd/systemd /sbin/init
    systemctl enable kubelet.service containerd.service undo-mount-hacks.service
    systemctl mask systemd-binfmt.service
    ctr oci spec | jq ".hooks.createContainer[.hooks.createContainer | length] |= . + {\"path\": \"/kind/bin/mount-product-files.sh\"}" \
      | jq "del(.process.rlimits)" > /etc/containerd/cri-base.json
    rm -f /etc/machine-id /var/lib/dbus/machine-id; touch /etc/machine-id
  '
  [ -s "$dir/etc/containerd/cri-base.json" ] || die "cri-base.json generation failed"
  # docker 20.10's import cannot set STOPSIGNAL: import, then one legacy-builder step on top.
  tar -C "$dir" -c . | docker import - "$BASE_IMAGE-rootfs" >/dev/null
  local ctx="$CACHE/ctx/base"; rm -rf "$ctx"; mkdir -p "$ctx"
  cat > "$ctx/Dockerfile" <<DOCKERFILE
FROM $BASE_IMAGE-rootfs
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]
DOCKERFILE
  docker_build "$BASE_IMAGE" "$key" "$ctx"
  docker rmi "$BASE_IMAGE-rootfs" >/dev/null 2>&1 || true
  rm -rf "$dir"
  timing "image $BASE_IMAGE" "$t"
}

# ---------------------------------------------------------------------------------------------
# 3. Node image: base + kubeadm/kubelet/kubectl + /kind/version + manifests + every image
#    preloaded into containerd (namespace k8s.io, pinned), then docker commit.
node_images() {
  echo "registry.k8s.io/kube-apiserver:$K8S_VERSION registry.k8s.io/kube-controller-manager:$K8S_VERSION"
  echo "registry.k8s.io/kube-scheduler:$K8S_VERSION registry.k8s.io/kube-proxy:$K8S_VERSION"
  echo "registry.k8s.io/etcd:$ETCD_IMAGE_TAG registry.k8s.io/coredns/coredns:$COREDNS_VERSION"
  echo "registry.k8s.io/pause:$PAUSE_VERSION registry.k8s.io/pause:$PAUSE_VERSION_KUBEADM"
  echo "$KINDNET_IMAGE $LOCAL_PATH_PROVISIONER_IMAGE $LOCAL_PATH_HELPER_IMAGE"
}

check_kubeadm_images() {
  local want have
  want=$("$BIN/kubeadm-$K8S_VERSION" config images list --kubernetes-version "$K8S_VERSION" 2>/dev/null | sort)
  for have in $want; do
    have_image "$have" || die "kubeadm expects $have, which is not built (fix the pins in versions.env)"
  done
}

build_node_image() {
  local imgs ids key
  imgs=$(node_images | tr ' ' '\n' | sort)
  ids=$(for i in $imgs $BASE_IMAGE; do docker image inspect -f '{{.Id}}' "$i"; done | sha256sum | cut -c1-16)
  key="node-$ids-$(cat "$BIN"/crictl-$CRICTL_VERSION "$BIN"/kubeadm-$K8S_VERSION "$BIN"/kubelet-$K8S_VERSION "$BIN"/kubectl-$K8S_VERSION \
    "$KIND_DIR"/images/node/*.yaml | sha256sum | cut -c1-16)"
  up_to_date "$NODE_IMAGE" "$key" && return 0
  local t; t=$(now)
  local c="veritas-node-build-$$"
  docker rm -f "$c" >/dev/null 2>&1 || true
  docker run -d --privileged --entrypoint=sleep --name "$c" --security-opt seccomp=unconfined "$BASE_IMAGE" infinity >/dev/null
  trap 'docker rm -f "'"$c"'" >/dev/null 2>&1 || true' EXIT
  local b
  for b in kubeadm kubelet kubectl; do
    docker cp "$BIN/$b-$K8S_VERSION" "$c:/usr/bin/$b"
    docker exec "$c" chown root:root "/usr/bin/$b"
  done
  docker cp "$BIN/crictl-$CRICTL_VERSION" "$c:/usr/local/bin/crictl"
  echo -n "$K8S_VERSION" | docker exec -i "$c" sh -c 'cat > /kind/version'
  docker exec "$c" mkdir -p /kind/manifests
  docker cp "$KIND_DIR/images/node/default-cni.yaml" "$c:/kind/manifests/default-cni.yaml"
  docker cp "$KIND_DIR/images/node/default-storage.yaml" "$c:/kind/manifests/default-storage.yaml"
  docker exec "$c" bash -c 'nohup containerd >/var/log/containerd-build.log 2>&1 &'
  wait_for "containerd in the build container" 60 docker exec "$c" ctr version || die "containerd did not start"
  local i
  for i in $imgs; do
    docker save "$i" | docker exec -i "$c" ctr --namespace=k8s.io images import --all-platforms --no-unpack --digests - >/dev/null \
      || die "import of $i into the node image failed"
    docker exec "$c" ctr --namespace=k8s.io images label "$i" io.cri-containerd.pinned=pinned >/dev/null
  done
  docker exec "$c" ctr --namespace=k8s.io images list -q > "$LOGS/node-images.txt"
  docker exec "$c" pkill containerd || true
  # containerd becomes a zombie of `sleep` (PID 1 here), so wait until no live one is left.
  wait_for "containerd to stop" 60 docker exec "$c" sh -c \
    'for p in $(pgrep -x containerd); do grep -q "^State:[[:space:]]*Z" /proc/$p/status || exit 1; done'
  sleep 1 # let the kernel finish closing containerd's files before the snapshot (not a wait for a condition)
  docker exec "$c" rm -f /var/log/containerd-build.log
  docker commit --change 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]' \
    --change "LABEL veritas.key=$key-$RECIPE_KEY" "$c" "$NODE_IMAGE" >/dev/null
  docker rm -f "$c" >/dev/null; trap - EXIT
  timing "image $NODE_IMAGE" "$t"
}

step=${1:-all}
t0=$(now)
case $step in
  tools) build_tools_images ;;
  base) build_base_image ;;
  components) build_tools_images; build_component_images ;;
  node) check_kubeadm_images; build_node_image ;;
  all) build_tools_images; build_base_image; build_component_images; check_kubeadm_images; build_node_image ;;
  *) die "usage: $0 [tools|base|components|node|all]" ;;
esac
# Rebuilt images leave their predecessors dangling; drop ours (labelled veritas.key) only.
docker image prune -f --filter label=veritas.key >/dev/null 2>&1 || true
log "images ($step) ready in $(( $(now) - t0 ))s"
