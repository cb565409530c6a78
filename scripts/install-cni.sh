#!/usr/bin/env bash
# Installs podswitch's CNI plugin for containerd (or any CNI runtime): the `podswitch`
# plugin binary into the CNI bin dir and a conflist into the CNI conf dir.
#
#   scripts/install-cni.sh [--bin-from DIR] [--cni-bin-dir DIR] [--cni-conf-dir DIR]
#                          [--socket PATH] [--network NAME] [--cni-version V]
#
# Defaults: the release build (built here if missing), /opt/cni/bin, /etc/cni/net.d,
# /run/podswitch/podswitchd.sock, network "pods", cniVersion 1.0.0.
#
# Both files are written beside their target and renamed into place, so a runtime that
# is running never sees half a file: containerd's CRI plugin watches the conf dir and
# picks the new conflist up without a restart. An existing podswitch conflist is
# replaced; other networks' files are left alone (the runtime uses the first conflist
# by name, so 10-podswitch comes before most).
set -euo pipefail
cd "$(dirname "$0")/.."

bin_from=""
cni_bin=/opt/cni/bin
cni_conf=/etc/cni/net.d
socket=/run/podswitch/podswitchd.sock
network=pods
version=1.0.0
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-from) bin_from="$2"; shift 2 ;;
    --cni-bin-dir) cni_bin="$2"; shift 2 ;;
    --cni-conf-dir) cni_conf="$2"; shift 2 ;;
    --socket) socket="$2"; shift 2 ;;
    --network) network="$2"; shift 2 ;;
    --cni-version) version="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install-cni.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$version" in
  0.3.0|0.3.1|0.4.0|1.0.0|1.1.0) ;;
  *) echo "install-cni.sh: --cni-version $version is not one the plugin speaks (0.3.0 to 1.1.0)" >&2; exit 2 ;;
esac
case "$network" in
  ''|*[!A-Za-z0-9_.-]*) echo "install-cni.sh: --network must be letters, digits, '_', '.', '-'" >&2; exit 2 ;;
esac
case "$socket" in
  /*) ;;
  *) echo "install-cni.sh: --socket must be an absolute path" >&2; exit 2 ;;
esac
if [ -z "$bin_from" ]; then
  bin_from=target/release
  [ -x "$bin_from/podswitch" ] || cargo build --release --locked -p cni-shim
fi
plugin="$bin_from/podswitch"
if [ ! -x "$plugin" ]; then
  echo "install-cni.sh: no plugin at $plugin: build it first (cargo build --release -p cni-shim)" >&2
  exit 1
fi

mkdir -p "$cni_bin" "$cni_conf"
install -m 0755 "$plugin" "$cni_bin/.podswitch.new"
mv -f "$cni_bin/.podswitch.new" "$cni_bin/podswitch"

conf="$cni_conf/10-podswitch.conflist"
cat > "$cni_conf/.10-podswitch.conflist.new" <<EOF
{
  "cniVersion": "$version",
  "name": "podswitch",
  "plugins": [
    {
      "type": "podswitch",
      "socket": "$socket",
      "network": "$network"
    }
  ]
}
EOF
chmod 0644 "$cni_conf/.10-podswitch.conflist.new"
mv -f "$cni_conf/.10-podswitch.conflist.new" "$conf"
echo "installed $cni_bin/podswitch and $conf (network \"$network\", daemon socket $socket)"
