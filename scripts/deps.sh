#!/usr/bin/env bash
# Installs the Debian packages podswitch's demo and tests use, if they are missing:
# iproute2 (ip), iputils-ping (ping), iputils-tracepath (tracepath), ethtool, tshark
# (reads the pcaps podswitchctl capture writes), procps (sysctl), util-linux (nsenter,
# setpriv: the CNI plugin and the socket test).
set -euo pipefail
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v tracepath >/dev/null || need+=(iputils-tracepath)
command -v ethtool >/dev/null || need+=(ethtool)
command -v tshark >/dev/null || need+=(tshark)
command -v sysctl >/dev/null || need+=(procps)
command -v nsenter >/dev/null || need+=(util-linux)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing packages: ${need[*]}; run as root (or: apt-get install ${need[*]})" >&2
  exit 1
fi
echo "installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
