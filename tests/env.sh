# Sourced by the scripts in tests/: build caches live outside the clone so a
# second run (or a fresh clone) rebuilds little.
export KUBESOCKS_CACHE=${KUBESOCKS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubesocks}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$KUBESOCKS_CACHE/target}
