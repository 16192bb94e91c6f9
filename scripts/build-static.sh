#!/usr/bin/env bash
# build-static.sh [--musl] — one fully static x86_64 binary in target/static/.
# Default: static glibc (crt-static). Measured with compare.sh --smoke, it keeps the
# dynamic build's speed and memory (list_tasks 8 449 req/s, peak RSS 31 MiB), where
# the musl build loses half its read throughput to musl's malloc under our threads
# (list_tasks 3 361 req/s). The price: a host *name* in HOST is resolved through
# glibc's NSS modules at run time; IP literals (the default 0.0.0.0) need nothing.
# --musl: the musl target (needs `rustup target add x86_64-unknown-linux-musl` and
# Debian's musl-tools for the bundled SQLite).
# Asserts that ldd finds no dynamic dependencies; prints the path and size.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/static
mkdir -p "$out"
if [[ ${1:-} == --musl ]]; then
  rm -f target/x86_64-unknown-linux-musl/release/dashboard-backend
  rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl ||
    rustup target add x86_64-unknown-linux-musl
  command -v musl-gcc >/dev/null || { echo "build-static: musl-gcc missing (apt-get install musl-tools)" >&2; exit 69; }
  target=x86_64-unknown-linux-musl
  cargo build --release --locked --target "$target"
else
  # --target keeps the RUSTFLAGS away from proc-macros (they cannot be static).
  target=x86_64-unknown-linux-gnu
  rm -f "target/$target/release/dashboard-backend"
  RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$target" 2>&1 |
    grep -v "statically linked applications requires at runtime the shared libraries" >&2 || true
fi
bin=target/$target/release/dashboard-backend
[[ -x $bin ]] || { echo "build-static: build failed" >&2; exit 1; }
cp "$bin" "$out/dashboard-backend"
if ldd "$out/dashboard-backend" 2>&1 | grep -q '=>'; then
  echo "build-static: the binary has dynamic dependencies:" >&2
  ldd "$out/dashboard-backend" >&2
  exit 1
fi
file "$out/dashboard-backend" | grep -q static || { echo "build-static: file(1) does not say static" >&2; exit 1; }
"$out/dashboard-backend" --version >/dev/null
echo "build-static: $out/dashboard-backend ($target, $(stat -c %s "$out/dashboard-backend") bytes): $(ldd "$out/dashboard-backend" 2>&1 | head -1 | xargs)"
