#!/bin/sh
# The image's entrypoint: runs `beanraft "$@"`.
# BEANRAFT_MEMBERS lists every member's Raft address, the same list on every node; when it is set
# and BEANRAFT_PEERS is not, a node's peers are the members other than its own BEANRAFT_RAFT.
set -eu
if [ -n "${BEANRAFT_MEMBERS:-}" ] && [ -z "${BEANRAFT_PEERS:-}" ]; then
    self=${BEANRAFT_RAFT:?BEANRAFT_MEMBERS needs BEANRAFT_RAFT, the Raft address of this node}
    found=no
    peers=""
    for member in $BEANRAFT_MEMBERS; do
        if [ "$member" = "$self" ]; then
            found=yes
        else
            peers="$peers $member"
        fi
    done
    if [ "$found" = no ]; then
        echo "BEANRAFT_RAFT=$self is not one of BEANRAFT_MEMBERS=$BEANRAFT_MEMBERS" >&2
        exit 64
    fi
    BEANRAFT_PEERS=${peers# }
    export BEANRAFT_PEERS
fi
exec beanraft "$@"
