#!/bin/sh
# install-deps.sh — install everything dinov2c needs to build, test and run on Debian 12, with
# apt-get (as root, or through sudo). The CUDA toolkit is not in Debian's main archive: when
# /usr/local/cuda (or $CUDA_HOME) exists, ./configure builds the CUDA backend too.
set -eu
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
    gcc g++ make autoconf automake autoconf-archive pkg-config ca-certificates \
    openmpi-bin libopenmpi-dev \
    libhdf5-openmpi-dev hdf5-tools \
    libyaml-dev \
    libopenblas-openmp-dev \
    libturbojpeg0-dev libpng-dev zlib1g-dev \
    dataset-fashion-mnist \
    >/dev/null
echo "install-deps: Debian packages installed"
