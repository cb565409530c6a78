#!/usr/bin/env bash
# Installs the Debian packages podswitch's demo and tests use, if they are missing:
# iproute2 (ip), iputils-ping (ping), iputils-tracepath (tracepath), ethtool, tshark
# (reads the pcaps podswitchctl capture writes), procps (sysctl), util-linux (nsenter,
# setpriv, unshare: the tests), and for the CNI tests and bench: containerd and runc
# (the runtime the end-to-end test starts), busybox-static (the containers' rootfs),
# containernetworking-plugins (loopback, and bridge + host-local as the bench's peer).
# It also makes the standard CNI directories, /etc/cni/net.d and /opt/cni/bin, empty if
# new: the containerd test mounts its own over them inside a private mount namespace.
set -euo pipefail
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v tracepath >/dev/null || need+=(iputils-tracepath)
command -v ethtool >/dev/null || need+=(ethtool)
command -v tshark >/dev/null || need+=(tshark)
command -v sysctl >/dev/null || need+=(procps)
command -v nsenter >/dev/null || need+=(util-linux)
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)   # the static one: it runs in an empty rootfs
[ -x /usr/lib/cni/loopback ] || need+=(containernetworking-plugins)
if [ "$(id -u)" -eq 0 ]; then mkdir -p /etc/cni/net.d /opt/cni/bin; fi
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing packages: ${need[*]}; run as root (or: apt-get install ${need[*]})" >&2
  exit 1
fi
echo "installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
