#!/bin/sh
# npu-serve [PROGRAM] [npu serve options...]: the container's entrypoint.
#
# PROGRAM is a compiled program (.npuz) or a folder holding one: KServe's storage initializer downloads
# the InferenceService's storageUri into /mnt/models, which is a folder.  A folder resolves to its
# model.npuz, else to its only *.npuz (looking one level down too).  Without PROGRAM (first argument
# missing or an option), $NPU_MODEL is used (default /mnt/models).
#
# Runs: npu serve PROGRAM --host $NPU_HOST --port $NPU_HTTP_PORT --grpc-port $NPU_GRPC_PORT [options...]
# (defaults 0.0.0.0, 8080, 8081: inside a pod the network namespace is the pod's, so 127.0.0.1 would be
# unreachable, even by the kubelet's probes).  Options given later override these: argparse keeps the last.
set -eu

program="${NPU_MODEL:-/mnt/models}"
case "${1-}" in
    ""|-*) ;;
    *) program="$1"; shift ;;
esac

if [ -d "$program" ]; then
    if [ -f "$program/model.npuz" ]; then
        program="$program/model.npuz"
    else
        found=$(find "$program" -maxdepth 2 -name '*.npuz' \( -type f -o -type l \) | sort)
        count=$(printf '%s' "$found" | grep -c . || true)
        if [ "$count" -ne 1 ]; then
            echo "npu-serve: $program: expected model.npuz or exactly one *.npuz, found $count:" >&2
            [ -n "$found" ] && printf '  %s\n' $found >&2
            exit 2
        fi
        program="$found"
    fi
fi

exec npu serve "$program" \
    --host "${NPU_HOST:-0.0.0.0}" --port "${NPU_HTTP_PORT:-8080}" --grpc-port "${NPU_GRPC_PORT:-8081}" "$@"
