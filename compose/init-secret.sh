#!/bin/sh
# One-shot: puts the shared cluster secret where every node reads it (BEANRAFT_CLUSTER_SECRET_FILE,
# on a volume they share), then exits.
#   - BEANRAFT_CLUSTER_SECRET set: that value is written (it replaces an older one).
#   - else a secret already in the file is kept, so restarts and `up` again change nothing.
#   - else a new random one is written (`beanraft secret`).
set -eu
file=${BEANRAFT_CLUSTER_SECRET_FILE:-/etc/beanraft/cluster-secret}
umask 077
if [ -n "${BEANRAFT_CLUSTER_SECRET:-}" ]; then
    printf '%s\n' "$BEANRAFT_CLUSTER_SECRET" >"$file.new"
    echo "cluster secret: taken from BEANRAFT_CLUSTER_SECRET"
elif [ -s "$file" ]; then
    echo "cluster secret: keeping the one in $file"
    exit 0
else
    beanraft secret >"$file.new"
    echo "cluster secret: a new random one"
fi
mv "$file.new" "$file"
