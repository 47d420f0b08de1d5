#!/usr/bin/env bash
# Debian packages the test suite uses: the PostgreSQL server (multi-worker search tests) and
# Fashion-MNIST (dataset tests). Installs what is missing when run as root; otherwise only reports.
set -euo pipefail
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
[ -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ] || need+=(dataset-fashion-mnist)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "system-deps: installing ${need[*]}"
    apt-get install -y -q "${need[@]}" >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q "${need[@]}" >/dev/null; }
else
    echo "system-deps: missing Debian packages ${need[*]} (not root: the tests that need them will be skipped)" >&2
fi
