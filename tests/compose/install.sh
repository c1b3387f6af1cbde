#!/usr/bin/env bash
# What tests/compose needs on a Debian 12 machine, installed when missing (.ci/run calls this as root):
# podman with runc (crun fails on hybrid cgroups), its network stack (netavark runs iptables: without it every
# container start fails "netavark: No such file or directory") and DNS, and debootstrap for the base image.
# podman-compose is a dev requirement (requirements-dev.lock), installed by `make setup`. podman's settings for the
# tests are in tests/compose/containers.conf (CONTAINERS_CONF), so the machine's own configuration is not changed.
set -euo pipefail
packages=(podman runc netavark aardvark-dns iptables debootstrap)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
echo "tests/compose/install.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
for attempt in 1 2 3; do  # another apt may hold the dpkg lock for a while
  if apt-get update -qq && apt-get install -y -qq -o DPkg::Lock::Timeout=120 --no-install-recommends "${missing[@]}"; then
    exit 0
  fi
  echo "tests/compose/install.sh: apt-get failed (attempt $attempt), retrying in 20 s" >&2
  sleep 20
done
exit 1
