# Sourced by the scripts in tests/: build caches live outside the clone so a
# second run (or a fresh clone) rebuilds little.
export KUBESOCKS_CACHE=${KUBESOCKS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubesocks}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$KUBESOCKS_CACHE/target}
# CI builds a fresh clone once: incremental state would only fill the cache.
if [[ -n ${CI:-} ]]; then
	export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
fi
