#!/usr/bin/env bash
# Builds the BeanRaft image on a machine that reaches no container registry.
#
#   compose/build-offline.sh [--rebuild] [STEP...]   STEP: engine base wheels image (default: all)
#
# engine  Makes sure a Docker engine answers. Installs docker.io, docker-compose and debootstrap
#         with apt-get when a tool is missing, and starts dockerd in the background when none runs
#         (log: $DOCKERD_LOG, pid file: $DOCKERD_PIDFILE). That engine gets no bridge network and
#         leaves iptables alone: this project's containers use host networking on loopback only.
#         It is left running; stop it with: kill "$(cat "$DOCKERD_PIDFILE")".
# base    Makes the image the Dockerfile starts FROM ($BASE_IMAGE) out of Debian bookworm (its
#         python3 is 3.11) with debootstrap and `docker import`, from the Debian mirror that this
#         machine's apt sources name, and gives it this machine's CA bundle ($HOST_CA_BUNDLE, by
#         default the first of the usual paths that exists): the image trusts what its build host
#         trusts, so a `docker build` FROM it (the compose file's, when compose/wheels/ is empty)
#         can fetch packages through the same TLS-inspecting proxy as this host. The root file
#         system is cached as a tarball ($CACHE_DIR), so this runs debootstrap once; delete the
#         tarball to run it again. An image of that name that this step made for the same CA
#         bundle is kept; one made for another bundle, or by an older version of this step, is
#         made again; one made elsewhere (e.g. the official image, pulled) is kept as it is.
#         --rebuild makes it again in any case.
# wheels  Builds BeanRaft's dependencies, and the setuptools that builds BeanRaft, into
#         compose/wheels/ with this machine's pip (so from the package index pip is set up for).
# image   Builds $BEANRAFT_IMAGE from the repository with `docker build --network none`: every
#         package comes from compose/wheels/, and a step that wanted the network would fail.
#
# After it, `docker-compose -f compose/docker-compose.yml up` (or `docker compose ...`) uses the
# image without building; after `base` alone, `up --build` builds it with packages from the
# index. Exit status: 0 done, 2 bad arguments, 3 no Docker engine could be had, else a failure.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim-bookworm}
BEANRAFT_IMAGE=${BEANRAFT_IMAGE:-beanraft:local}
CACHE_DIR=${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/beanraft-compose}
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/beanraft-dockerd.log}
DOCKERD_PIDFILE=${DOCKERD_PIDFILE:-/var/run/beanraft-dockerd.pid}
PYTHON=${PYTHON:-python3}
HOST_CA_BUNDLE=${HOST_CA_BUNDLE:-}
REBUILD=no
SUITE=bookworm
ROOTFS_TAR="$CACHE_DIR/debian-$SUITE-python3.tar"
BASE_DESCRIPTION="Debian $SUITE minbase with python3, built locally by compose/build-offline.sh"
# The base image's label naming the CA bundle it got: sha256:<digest of the file>, or none.
CA_LABEL=org.beanraft.base.host-ca

say() { printf 'build-offline: %s\n' "$*" >&2; }

engine_answers() { docker info >/dev/null 2>&1; }

install_tools() {
    local missing=()
    for tool in docker dockerd docker-compose debootstrap; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "missing ${missing[*]}: installing docker.io docker-compose debootstrap"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq docker.io docker-compose debootstrap >/dev/null
}

step_engine() {
    if ! install_tools; then
        say "no Docker engine: cannot install docker.io docker-compose debootstrap with apt-get"
        exit 3
    fi
    engine_answers && return 0
    say "starting dockerd (log $DOCKERD_LOG)"
    # setsid: the engine outlives this script and the terminal it was started from.
    setsid dockerd --pidfile "$DOCKERD_PIDFILE" --bridge=none --iptables=false \
        --ip-forward=false --ip-masq=false </dev/null >>"$DOCKERD_LOG" 2>&1 &
    local pid=$!
    for _ in $(seq 120); do
        engine_answers && { say "dockerd is up (pid $pid)"; return 0; }
        if ! kill -0 "$pid" 2>/dev/null; then
            say "no Docker engine: dockerd exited; its last words ($DOCKERD_LOG):"
            tail -n 5 "$DOCKERD_LOG" >&2
            exit 3
        fi
        sleep 0.5
    done
    say "no Docker engine: dockerd (pid $pid) did not answer within 60 s; stopped it; see $DOCKERD_LOG"
    kill "$pid" 2>/dev/null || true
    exit 3
}

# Prints the Debian archive this machine's apt uses (deb822 .sources files or one-line lists),
# preferring the entry for the main suite over -security and -updates.
debian_mirror() {
    "$PYTHON" - <<'EOF'
import glob, re
entries = []  # (uri, suites)
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in re.split(r"\n\s*\n", open(path).read()):
        fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
        if "deb" in fields.get("Types", "").split():
            for uri in fields.get("URIs", "").split():
                entries.append((uri, fields.get("Suites", "").split()))
for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for line in lines:
        words = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
        if len(words) >= 3 and words[0] == "deb":
            entries.append((words[1], [words[2]]))
main = [uri for uri, suites in entries if any("-" not in s for s in suites) and "security" not in uri]
if not main:
    raise SystemExit("no Debian mirror in /etc/apt/sources.list or /etc/apt/sources.list.d")
print(main[0])
EOF
}

make_rootfs_tarball() {
    local mirror rootfs
    mirror=$(debian_mirror)
    rootfs=$(mktemp -d)
    say "debootstrap $SUITE (minbase with python3 and python3-venv) from apt's mirror"
    if ! debootstrap --variant=minbase --include=python3,python3-venv \
            "$SUITE" "$rootfs" "$mirror" >"$CACHE_DIR/debootstrap.log" 2>&1; then
        tail -n 20 "$CACHE_DIR/debootstrap.log" >&2
        rm -rf "$rootfs"
        return 1
    fi
    # What an image needs no copy of: downloaded packages, package lists, docs, translations.
    rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
        "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
    tar -C "$rootfs" --numeric-owner -cf "$ROOTFS_TAR.part" .
    mv "$ROOTFS_TAR.part" "$ROOTFS_TAR"
    rm -rf "$rootfs"
}

# Prints the path of this machine's CA bundle: $HOST_CA_BUNDLE when set, else the first of the
# usual paths (Debian/Ubuntu/Alpine/Arch, Fedora/RHEL, openSUSE, BSD/macOS) that is a non-empty
# file. Status 1: none; 2: HOST_CA_BUNDLE names no such file.
host_ca_bundle() {
    local path
    if [ -n "$HOST_CA_BUNDLE" ]; then
        [ -s "$HOST_CA_BUNDLE" ] && { printf '%s\n' "$HOST_CA_BUNDLE"; return 0; }
        say "HOST_CA_BUNDLE=$HOST_CA_BUNDLE is not a non-empty file"
        return 2
    fi
    for path in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt \
            /etc/ssl/ca-bundle.pem /etc/ssl/cert.pem; do
        [ -s "$path" ] && { printf '%s\n' "$path"; return 0; }
    done
    return 1
}

# Imports the cached root file system and derives $BASE_IMAGE from it, with the CA bundle $1
# (empty: none) installed as the image's own. Why: the image trusts what its build host trusts.
# A host behind a TLS-inspecting proxy trusts the proxy's CA, and so then does a `docker build`
# FROM this image, whose pip can fetch packages through that proxy as the host's pip does.
# The derivation only copies a file in, so it builds with --network none.
make_base_image() {
    local bundle=$1 ca=none rootfs_tag="beanraft-base-rootfs:$SUITE-$$" context old
    old=$(docker image inspect --format '{{.Id}}' "$BASE_IMAGE" 2>/dev/null || true)
    say "docker import $ROOTFS_TAR"
    docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["python3"]' \
        -c "LABEL org.opencontainers.image.description=\"$BASE_DESCRIPTION\"" \
        "$ROOTFS_TAR" "$rootfs_tag" >/dev/null
    context=$(mktemp -d)
    {
        echo "FROM $rootfs_tag"
        if [ -n "$bundle" ]; then
            ca="sha256:$(sha256sum "$bundle" | cut -d' ' -f1)"
            install -m 0644 "$bundle" "$context/ca-certificates.crt"
            # Replaces the bundle of Debian's ca-certificates; OpenSSL reads it by default, the
            # variables point Python's ssl, requests and pip (which otherwise uses the certifi
            # bundle it vendors) at it too.
            echo "COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt"
            echo "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \\"
            echo "    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \\"
            echo "    PIP_CERT=/etc/ssl/certs/ca-certificates.crt"
        fi
        echo "LABEL $CA_LABEL=$ca"
    } >"$context/Dockerfile"
    say "docker build --network none -t $BASE_IMAGE (CA bundle: ${bundle:-none})"
    local status=0
    DOCKER_BUILDKIT=0 docker build --quiet --network none --force-rm -t "$BASE_IMAGE" \
        "$context" >/dev/null || status=$?
    rm -rf "$context"
    # Only the tag goes: the imported layer stays, as the new image's parent.
    docker rmi "$rootfs_tag" >/dev/null 2>&1 || true
    [ "$status" -eq 0 ] || return "$status"
    # The image this replaced, unless an image built FROM it still needs it.
    local new
    new=$(docker image inspect --format '{{.Id}}' "$BASE_IMAGE")
    if [ -n "$old" ] && [ "$old" != "$new" ]; then
        docker rmi "$old" >/dev/null 2>&1 || true
    fi
}

# Prints the value of label $1 of $BASE_IMAGE, empty when it has none.
base_label() {
    docker image inspect --format "{{index .Config.Labels \"$1\"}}" "$BASE_IMAGE" 2>/dev/null || true
}

step_base() {
    local bundle want=none have description found=0
    bundle=$(host_ca_bundle) || found=$?
    case "$found" in
        0) want="sha256:$(sha256sum "$bundle" | cut -d' ' -f1)" ;;
        1) say "no CA bundle on this machine: the base image keeps Debian's" ;;
        *) exit 2 ;;
    esac
    if [ "$REBUILD" = no ] && docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        description=$(base_label org.opencontainers.image.description)
        have=$(base_label "$CA_LABEL")
        if [ "$description" != "$BASE_DESCRIPTION" ]; then
            say "base image $BASE_IMAGE exists and was not made here; kept (--rebuild replaces it)"
            return 0
        fi
        if [ "$have" = "$want" ]; then
            say "base image $BASE_IMAGE exists, with this machine's CA bundle; kept"
            return 0
        fi
        say "base image $BASE_IMAGE has CA bundle ${have:-unknown}, this machine $want: making it anew"
    fi
    mkdir -p "$CACHE_DIR"
    [ -s "$ROOTFS_TAR" ] || make_rootfs_tarball
    make_base_image "$bundle"
}

step_wheels() {
    local version
    version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    # The wheels must fit the image's Python (Debian bookworm's 3.11), not just this machine's.
    if [ "$version" != 3.11 ]; then
        say "$PYTHON is Python $version; set PYTHON to a Python 3.11 (the image's) to build the wheels"
        return 1
    fi
    rm -rf "$repo/compose/wheels"
    say "pip wheel: BeanRaft's dependencies into compose/wheels/"
    "$PYTHON" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$repo/compose/wheels" \
        "$repo" 'setuptools>=68' wheel 2> >(grep -v '^WARNING: Location' >&2)
    # BeanRaft itself is built from the source in the image, so the wheels never hold stale code.
    rm -f "$repo"/compose/wheels/beanraft-*.whl
}

step_image() {
    if ! ls "$repo"/compose/wheels/*.whl >/dev/null 2>&1; then
        say "compose/wheels/ is empty: run the wheels step first"
        return 1
    fi
    say "docker build --network none -t $BEANRAFT_IMAGE"
    # The classic builder, as docker-compose v1 uses: it needs no buildx plugin, which a docker CLI
    # from apt may lack.
    DOCKER_BUILDKIT=0 docker build --network none --force-rm --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        -f "$repo/compose/Dockerfile" -t "$BEANRAFT_IMAGE" "$repo" >&2
    # Untagged leftovers of earlier builds (the build stage, replaced images) only take space.
    docker image prune --force --filter label=org.beanraft.image=build-offline >/dev/null
}

steps=()
for arg in "$@"; do
    case "$arg" in
        --rebuild) REBUILD=yes ;;
        *) steps+=("$arg") ;;
    esac
done
[ ${#steps[@]} -gt 0 ] || steps=(engine base wheels image)
for step in "${steps[@]}"; do
    case "$step" in
        engine|base|wheels|image) "step_$step" ;;
        *) say "unknown step $step (engine, base, wheels or image)"; exit 2 ;;
    esac
done
