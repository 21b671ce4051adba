#!/usr/bin/env bash
# Installs the Debian packages the scheduler tests use (root, non-interactive, idempotent).
set -euo pipefail
PKGS=(slurm-wlm munge openmpi-bin gridengine-master gridengine-exec gridengine-client)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
export DEBIAN_FRONTEND=noninteractive
H=$(hostname)
debconf-set-selections <<SEL
gridengine-common shared/gridenginemaster string $H
gridengine-common shared/gridenginecell string default
gridengine-common shared/gridengineconfig boolean true
gridengine-master shared/gridenginemaster string $H
gridengine-master shared/gridenginecell string default
gridengine-master shared/gridengineconfig boolean true
SEL
apt-get update -qq
apt-get install -y -qq "${missing[@]}"
