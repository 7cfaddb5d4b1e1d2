#!/bin/sh
# Installed as iptables, iptables-save, iptables-restore (and ip6tables*) in the kube-proxy and
# kindnet images. On first use it picks the backend the node already uses (legacy or nft, the
# one holding more rules, as kind's node entrypoint does), points the alternatives at it, and
# runs the requested command with that backend.
set -eu
count() { grep -c '^-' || true; }
legacy=$( (iptables-legacy-save; ip6tables-legacy-save) 2>/dev/null | count)
nft=$( (timeout 5 sh -c 'iptables-nft-save; ip6tables-nft-save') 2>/dev/null | count)
if [ "$legacy" -gt "$nft" ]; then mode=legacy; else mode=nft; fi
update-alternatives --set iptables "/usr/sbin/iptables-$mode" >/dev/null 2>&1 || true
update-alternatives --set ip6tables "/usr/sbin/ip6tables-$mode" >/dev/null 2>&1 || true
cmd=$(basename "$0")
case "$cmd" in
  iptables|iptables-save|iptables-restore) exec "/usr/sbin/iptables-$mode${cmd#iptables}" "$@" ;;
  ip6tables|ip6tables-save|ip6tables-restore) exec "/usr/sbin/ip6tables-$mode${cmd#ip6tables}" "$@" ;;
  *) echo "iptables-wrapper: unexpected name $cmd" >&2; exit 1 ;;
esac
