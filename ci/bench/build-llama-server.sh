#!/usr/bin/env bash
# Builds llama.cpp's own `llama-server` (the benchmark peer) from the llama.cpp that the
# llama-cpp-python source distribution vendors (PyPI is reachable here; GitHub is not).
#
#   ci/bench/build-llama-server.sh            # prints the path of the binary on its last line
#   LLAMA_SERVER_CPU=native ci/bench/build-llama-server.sh
#
# CPU flags: llama-cpp-sys-2 builds ggml with GGML_NATIVE=OFF and `-march=x86-64` unless
# rustc targets `target-cpu=native`, i.e. SSE2 only on x86_64. LLAMA_SERVER_CPU=match (the
# default) builds the peer the same way so the comparison measures the runtimes, not the
# compilers' instruction sets; `native` builds it as llama.cpp does by default (GGML_NATIVE=ON).
#
# Cached under $VERITAS_BENCH_CACHE (default /var/cache/veritas-bench), keyed by the
# llama-cpp-python version, the CPU mode and a hash of this script: a second run does no work.
set -euo pipefail

VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
CPU=${LLAMA_SERVER_CPU:-match}
CACHE=${VERITAS_BENCH_CACHE:-/var/cache/veritas-bench}
JOBS=${JOBS:-2}

case "$CPU" in
  match) cpu_flags=(-DGGML_NATIVE=OFF -DCMAKE_C_FLAGS=-march=x86-64 -DCMAKE_CXX_FLAGS=-march=x86-64) ;;
  native) cpu_flags=(-DGGML_NATIVE=ON) ;;
  *) echo "LLAMA_SERVER_CPU must be match or native, not '$CPU'" >&2; exit 2 ;;
esac

recipe=$(sha256sum "$0" | cut -c1-12)
key="llama-cpp-python-$VERSION-$CPU-$recipe"
out="$CACHE/bin/llama-server-$key"
log() { printf '[build-llama-server] %s\n' "$*" >&2; }

if [[ -x "$out" ]]; then
  log "cached: $out"
  echo "$out"
  exit 0
fi

# Build tools from Debian when missing (cmake, a C++ compiler, make, pip).
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v c++ >/dev/null || need+=(g++)
command -v make >/dev/null || need+=(make)
command -v pip3 >/dev/null || command -v pip >/dev/null || need+=(python3-pip)
if ((${#need[@]})); then
  log "installing ${need[*]} from apt"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
pip=$(command -v pip3 || command -v pip)

mkdir -p "$CACHE/src" "$CACHE/bin" "$CACHE/build"
sdist_dir="$CACHE/src/llama-cpp-python-$VERSION"
if [[ ! -d "$sdist_dir/vendor/llama.cpp" ]]; then
  log "downloading the llama-cpp-python $VERSION sdist from PyPI"
  dl=$(mktemp -d)
  "$pip" download --quiet --no-deps --no-binary llama-cpp-python \
    "llama-cpp-python==$VERSION" -d "$dl" 2>&1 | tail -n 5 >&2 || true
  tarball=$(ls "$dl"/llama_cpp_python-*.tar.gz "$dl"/llama-cpp-python-*.tar.gz 2>/dev/null | head -n 1 || true)
  if [[ -z "$tarball" ]]; then
    log "pip did not produce the sdist of llama-cpp-python $VERSION (see above)"
    exit 1
  fi
  rm -rf "$sdist_dir.tmp" && mkdir -p "$sdist_dir.tmp"
  tar -xzf "$tarball" -C "$sdist_dir.tmp" --strip-components=1
  [[ -f "$sdist_dir.tmp/vendor/llama.cpp/CMakeLists.txt" ]] || { log "no vendor/llama.cpp in $tarball"; exit 1; }
  mv "$sdist_dir.tmp" "$sdist_dir"
  rm -rf "$dl"
fi

build="$CACHE/build/$key"
log "configuring in $build (cpu: $CPU)"
cmake -S "$sdist_dir/vendor/llama.cpp" -B "$build" \
  -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=ON -DGGML_OPENMP=OFF "${cpu_flags[@]}" >"$build.configure.log" 2>&1 \
  || { tail -n 30 "$build.configure.log" >&2; exit 1; }
log "building llama-server (nice 10, -j$JOBS); log: $build.build.log"
started=$(date +%s)
nice -n 10 cmake --build "$build" --target llama-server -j "$JOBS" >"$build.build.log" 2>&1 \
  || { tail -n 30 "$build.build.log" >&2; exit 1; }
log "built in $(( $(date +%s) - started )) s"
install -m 0755 "$build/bin/llama-server" "$out.tmp"
mv "$out.tmp" "$out"
"$out" --version >&2 2>&1 || true
echo "$out"
