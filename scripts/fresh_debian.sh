#!/usr/bin/env bash
# The README's commands on a fresh minimal Debian, as a newcomer meets them (docs/performance.md, "make demo,
# measured"): debootstrap a minbase system, give it only python3 and git, clone this repository's HEAD into it,
# then run the README's first line and the commands named. Needs root and debootstrap (apt-get install debootstrap).
#
#   sudo bash scripts/fresh_debian.sh bookworm /tmp/deb12 "make demo" "make test"   # Debian 12, Python 3.11
#   sudo bash scripts/fresh_debian.sh trixie /tmp/deb13 "make setup" ".venv/bin/python -m pytest -q -m slow"  # 3.13
#
# A chroot shares this machine's kernel and network; it has no /etc/hosts (the hostname does not resolve, as on
# a minimal image). Where TLS goes through a proxy with its own CA, the host's CA bundle is copied in.
set -euo pipefail
suite=${1:?suite: bookworm or trixie}; root=${2:?a directory for the new system}; shift 2
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
[ -x "$root/usr/bin/apt-get" ] || debootstrap --variant=minbase "$suite" "$root"
for fs in proc sys dev; do mountpoint -q "$root/$fs" || mount --rbind "/$fs" "$root/$fs"; done
trap 'for fs in proc sys dev; do umount -R "$root/$fs" 2>/dev/null || true; done' EXIT
cp /etc/resolv.conf "$root/etc/"
chroot "$root" /bin/bash -c "DEBIAN_FRONTEND=noninteractive apt-get update -qq && apt-get install -y -qq python3 git >/dev/null"
[ -f /etc/ssl/certs/ca-certificates.crt ] && mkdir -p "$root/etc/ssl/certs" && \
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
rm -rf "$root/root/tchaikovsky" && git clone -q "$repo" "$root/root/tchaikovsky"
first=$(sed -n '/^## Two commands/,/^```$/p' "$repo/README.md" | grep -m1 'apt-get' | sed 's/^sudo //; s/&& sudo /\&\& /; s/#.*//')
for cmd in "$first" "$@"; do
  echo "== $cmd"
  start=$(date +%s)
  chroot "$root" /bin/bash -c "cd /root/tchaikovsky && DEBIAN_FRONTEND=noninteractive HOME=/root $cmd"
  echo "== $cmd: $(( $(date +%s) - start )) s"
done
