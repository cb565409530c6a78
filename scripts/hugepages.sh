#!/usr/bin/env bash
# Adds or removes 2 MiB hugepages relative to what is reserved now, so that pages other
# processes reserved are left alone: `hugepages.sh add N`, `hugepages.sh remove N`.
set -euo pipefail
op=${1:-}; n=${2:-}
[[ "$op" =~ ^(add|remove)$ && "$n" =~ ^[0-9]+$ ]] || { echo "usage: $0 add|remove PAGES" >&2; exit 2; }
cur=$(cat /proc/sys/vm/nr_hugepages)
if [ "$op" = add ]; then new=$((cur + n)); else new=$((cur > n ? cur - n : 0)); fi
sysctl -qw vm.nr_hugepages="$new"
echo "vm.nr_hugepages: $cur -> $(cat /proc/sys/vm/nr_hugepages)"
