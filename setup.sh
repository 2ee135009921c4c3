#!/usr/bin/env bash
# Install what the project needs on a fresh machine: the pinned Python packages and, where it is
# missing, Debian's Fashion-MNIST package (offline data for the embedded default). Idempotent.
set -euo pipefail
cd "$(dirname "$0")"
python -m pip install -q --root-user-action=ignore -r requirements.txt
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo"
  { $SUDO apt-get install -y -q dataset-fashion-mnist || { $SUDO apt-get update -q && $SUDO apt-get install -y -q dataset-fashion-mnist; }; } >/dev/null \
    || echo "note: could not install dataset-fashion-mnist; torchvision will try to download Fashion-MNIST into data/"
fi
