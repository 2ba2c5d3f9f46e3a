# Shared by the tool-cache scripts in hack/: where the cache lives and how a build takes its lock.
# Sourced, not run.

CACHE_ROOT="${ECS_WORKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ecs-worker-operator}"

# with_lock NAME: holds an exclusive lock on $CACHE_ROOT/.NAME.lock until the calling script
# exits, so that two first runs started at once (`make demo` beside `make test`) build a tool
# once: the second waits, then finds the finished build.
with_lock() {
  mkdir -p "$CACHE_ROOT"
  exec 9>"$CACHE_ROOT/.$1.lock"
  if ! flock -n 9; then
    echo "waiting for another build of $1 to finish" >&2
    flock 9
  fi
}
