#!/usr/bin/env bash
# labelport benchmark harness. See docs/BENCHMARKS.md.
#
#   bench/run.sh [--n 100000] [--repeats 3] [--postgres] [--with-label-studio] [--ls-n 10000]
#                [--ls-only] [--rate 200] [--lag-seconds 15] [--no-doc] [--keep]
#   bench/run.sh --load [--clients 200] [--ops 50] [--n 20000] [--postgres]
#   bench/run.sh --api-load [--n 100000] [--rate 1000] [--seconds 30] [--postgres]
#                [--shares 0.4,0.4,0.2] [--page-size 30] [--connections 16] [--after-seed-sql SQL]
#                [--sync-loop]   (a new full sync each time one ends, for the whole window)
#   bench/run.sh --import [--n 100000] [--repeats 3] [--postgres]
#   bench/run.sh --endpoint-cpu [--n 20000] [--seconds 8] [--postgres] [--rounds 3]
#                [--only tasks,tasks_all,task,storages]
#   bench/run.sh --target s3|gcs|azure|redis [--n 2000] [--repeats 3] [--postgres] [--endpoints moto,s3s-fs]
#                [--with-label-studio --ls-n 2000]   (Label Studio 1.23.2 to the same emulator)
#
# --load: CLIENTS clients create, update and delete annotations (OPS each) during a full sync
# of N annotations (bench/load.py): request latency p50/p99, 5xx, export lag, and whether the
# directory equals the database once quiet.
# --api-load: oha (installed on first use into bench/.tools) drives the reads
# `GET /api/storages/export/localfiles?project=`, `GET /api/tasks` and the write
# `POST /api/tasks/{id}/annotations/` at RATE requests/s in total for SECONDS, started with a
# full sync of N annotations (bench/apiload.py): latency p50/p99/max, errors, achieved rate.
# With --sync-loop, a sync runs for the whole window (each time one ends, a new storage of a
# twin project starts its first sync), so every request is measured beside one.
# --endpoint-cpu: each endpoint alone, oha without a rate limit, labelport's CPU time per
# request (bench/endpointcpu.py): what a change to a handler costs or saves, steadier than p99.
# --import: one `POST /api/projects/{id}/import` of N annotated tasks against a floor that
# inserts the same rows (bench/importfloor.rs, psql COPY), interleaved (bench/importbench.py).
# LABELPORT_BIN=path skips the release build and measures that binary.
# --target: full syncs to the target's emulator (s3: moto and s3s-fs if installed, `cargo
# install s3s-fs@0.14.1 --locked --features binary` or S3S_FS=path; gcs: fake-gcs-server;
# azure: Azurite; redis: redis-server) against bench/targetfloor.rs, by bench/targets.py.
# LABELPORT_TARGET_CONCURRENCY (default 32) sets the requests in flight of both.
#
# Builds labelport (release) and the floor program, starts the server(s) on 127.0.0.1 with
# a temporary data dir, runs bench/bench.py, prints one table and updates docs/BENCHMARKS.md.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
LOAD=0; API_LOAD=0; ENDPOINT_CPU=0; CPU_EXTRA=(); RATE=""; API_EXTRA=(); IMPORT=0; SECONDS_=""; CLIENTS=200; OPS=50; TARGET=localfiles; ENDPOINTS="moto,s3s-fs"; N=""; REPEATS=3; LS_N=10000; WITH_LS=0; LS_ONLY=0; POSTGRES=0; DOC=1; KEEP=0; EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --n) N="$2"; shift 2;;
    --target) TARGET="$2"; shift 2;;
    --load) LOAD=1; shift;;
    --api-load) API_LOAD=1; shift;;
    --endpoint-cpu) ENDPOINT_CPU=1; shift;;
    --rounds) CPU_EXTRA+=(--rounds "$2"); shift 2;;
    --only) CPU_EXTRA+=(--endpoints "$2"); shift 2;;
    --import) IMPORT=1; shift;;
    --seconds) SECONDS_="$2"; shift 2;;
    --shares|--page-size|--connections|--after-seed-sql) API_EXTRA+=("$1" "$2"); shift 2;;
    --clients) CLIENTS="$2"; shift 2;;
    --ops) OPS="$2"; shift 2;;
    --endpoints) ENDPOINTS="$2"; shift 2;;
    --repeats) REPEATS="$2"; shift 2;;
    --ls-n) LS_N="$2"; LS_N_SET="$2"; shift 2;;
    --with-label-studio) WITH_LS=1; shift;;
    --ls-only) WITH_LS=1; LS_ONLY=1; shift;;
    --postgres) POSTGRES=1; shift;;
    --no-doc) DOC=0; shift;;
    --keep) KEEP=1; shift;;
    --rate) RATE="$2"; EXTRA+=("$1" "$2"); shift 2;;
    --lag-seconds|--ls-lag-seconds|--chunk|--inc-repeats|--floor-threads|--floor-mode|--ls-repeats)
      EXTRA+=("$1" "$2"); shift 2;;
    --skip-lag|--skip-incremental|--restart-before-sync|--no-floor) EXTRA+=("$1"); shift;;
    --sync-loop) API_EXTRA+=("$1"); shift;;
    -h|--help) sed -n '2,36p' "$0"; exit 0;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
done

WORK="$(mktemp -d "${BENCH_TMPDIR:-/tmp}/labelport-bench.XXXXXX")"
PGDB=""
PY_PID=""
cleanup() {
  if [[ -n "$PY_PID" ]] && kill -0 "$PY_PID" 2>/dev/null; then kill -TERM "$PY_PID" 2>/dev/null || true; wait "$PY_PID" 2>/dev/null || true; fi
  if [[ -n "$PGDB" ]]; then psql -h 127.0.0.1 -U postgres -q -c "DROP DATABASE IF EXISTS $PGDB" >/dev/null 2>&1 || true; fi
  if [[ $KEEP == 0 ]]; then rm -rf "$WORK"; else echo "kept $WORK" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -n "${LABELPORT_BIN:-}" ]]; then
  LABELPORT="$LABELPORT_BIN"
else
  echo "== building labelport (release)" >&2
  (cd "$REPO" && cargo build --release --bin labelport >&2)
  LABELPORT="$REPO/target/release/labelport"
fi
FLOOR="$WORK/floor"
new_pg_database() {  # sets PGDB (dropped on exit) and PGURL
  PGDB="labelport_bench_$$_$RANDOM"
  psql -h 127.0.0.1 -U postgres -q -c "CREATE DATABASE $PGDB" >/dev/null
  PGURL="postgres://postgres@127.0.0.1:5432/$PGDB"
}
run_and_exit() {  # run_and_exit script.py name: runs it with ARGS (+ doc, note), keeps its results, exits
  [[ $DOC == 1 ]] && ARGS+=(--doc "$REPO/docs/BENCHMARKS.md")
  [[ -n "${BENCH_NOTE:-}" ]] && ARGS+=(--note "$BENCH_NOTE")
  mkdir -p "$REPO/bench/results"
  local rc=0
  python3 "$HERE/$1" "${ARGS[@]}" || rc=$?
  cp "$WORK/results.json" "$REPO/bench/results/last-$2-run.json" 2>/dev/null || true
  exit $rc
}
install_oha() {  # sets OHA
  local version=1.16.0
  OHA="$HERE/.tools/bin/oha"
  if ! "$OHA" --version 2>/dev/null | grep -q " $version"; then
    # native-tls (the system OpenSSL) builds faster than the default rustls/aws-lc; oha needs one.
    echo "== installing oha $version into bench/.tools (first use, a few minutes)" >&2
    cargo install oha --version "$version" --locked \
      --no-default-features --features native-tls --root "$HERE/.tools" >&2
  fi
}
if [[ $ENDPOINT_CPU == 1 ]]; then
  install_oha
  ARGS=(--labelport "$LABELPORT" --oha "$OHA" --work "$WORK" --n "${N:-20000}" --json "$WORK/results.json"
        "${CPU_EXTRA[@]}")
  [[ -n $SECONDS_ ]] && ARGS+=(--seconds "$SECONDS_")
  [[ $POSTGRES == 1 ]] && { new_pg_database; ARGS+=(--database-url "$PGURL"); }
  run_and_exit endpointcpu.py endpoint-cpu
fi
if [[ $API_LOAD == 1 ]]; then
  install_oha
  ARGS=(--labelport "$LABELPORT" --oha "$OHA" --work "$WORK" --n "${N:-100000}" --seconds "${SECONDS_:-30}"
        --json "$WORK/results.json" "${API_EXTRA[@]}")
  [[ -n "$RATE" ]] && ARGS+=(--rate "$RATE")
  # The storage directory on tmpfs (as the full-sync benchmarks of issue #11), the database on disk.
  [[ -d /dev/shm ]] && ARGS+=(--storage-parent "${BENCH_STORAGE_TMPDIR:-/dev/shm}")
  [[ $POSTGRES == 1 ]] && { new_pg_database; ARGS+=(--database-url "$PGURL"); }
  run_and_exit apiload.py api-load
fi
if [[ $IMPORT == 1 ]]; then
  ARGS=(--labelport "$LABELPORT" --work "$WORK" --n "${N:-100000}" --repeats "$REPEATS" --json "$WORK/results.json")
  if [[ $POSTGRES == 1 ]]; then
    ARGS+=(--postgres)
  else
    echo "== building the import floor program" >&2
    rustc -O --edition 2021 -l sqlite3 -o "$WORK/importfloor" "$HERE/importfloor.rs"
    ARGS+=(--floor "$WORK/importfloor")
  fi
  run_and_exit importbench.py import
fi
if [[ $LOAD == 1 ]]; then
  ARGS=(--labelport "$LABELPORT" --work "$WORK" --n "${N:-20000}" --clients "$CLIENTS" --ops "$OPS"
        --json "$WORK/results.json")
  [[ $POSTGRES == 1 ]] && { new_pg_database; ARGS+=(--database-url "$PGURL"); }
  mkdir -p "$REPO/bench/results"
  RC=0
  python3 "$HERE/load.py" "${ARGS[@]}" || RC=$?
  cp "$WORK/results.json" "$REPO/bench/results/last-load-run.json" 2>/dev/null || true
  exit $RC
fi
if [[ $TARGET != localfiles ]]; then
  case "$TARGET" in s3|gcs|azure|redis) ;; *) echo "unknown target $TARGET (localfiles, s3, gcs, azure, redis)" >&2; exit 2;; esac
  "$REPO/scripts/emulators" install
  echo "== building the floor program" >&2
  rustc -O --edition 2021 -o "$WORK/targetfloor" "$HERE/targetfloor.rs"
  ARGS=(--target "$TARGET" --labelport "$LABELPORT" --floor "$WORK/targetfloor" --repo "$REPO" --n "${N:-2000}"
        --repeats "$REPEATS" --endpoints "$ENDPOINTS" --work "$WORK" --json "$WORK/results.json")
  S3S="${S3S_FS:-$(command -v s3s-fs || true)}"
  [[ $TARGET == s3 && -n "$S3S" ]] && ARGS+=(--s3s-fs "$S3S")
  [[ -n "${LABELPORT_TARGET_CONCURRENCY:-}" ]] && ARGS+=(--concurrency "$LABELPORT_TARGET_CONCURRENCY")
  [[ $DOC == 1 ]] && ARGS+=(--doc "$REPO/docs/BENCHMARKS.md")
  if [[ $WITH_LS == 1 ]]; then
    LS_VENV="${LS_VENV:-$WORK/ls-venv}"
    if [[ ! -x "$LS_VENV/bin/label-studio" ]]; then
      echo "== installing label-studio==1.23.2 into $LS_VENV (takes minutes)" >&2
      python3 -m venv "$LS_VENV"
      "$LS_VENV/bin/pip" install -q --disable-pip-version-check label-studio==1.23.2 >&2
    fi
    ARGS+=(--with-label-studio --ls-venv "$LS_VENV" --ls-n "${LS_N_SET:-2000}")
  fi
  [[ $POSTGRES == 1 ]] && { new_pg_database; ARGS+=(--database-url "$PGURL"); }
  mkdir -p "$REPO/bench/results"
  python3 "$HERE/targets.py" "${ARGS[@]}"
  cp "$WORK/results.json" "$REPO/bench/results/last-$TARGET-run.json" 2>/dev/null || true
  exit 0
fi
N="${N:-100000}"
echo "== building the floor program" >&2
rustc -O --edition 2021 -o "$FLOOR" "$HERE/floor.rs"

ARGS=(--labelport "$LABELPORT" --floor "$FLOOR" --n "$N" --repeats "$REPEATS" --work "$WORK" --ls-n "$LS_N"
      --json "$WORK/results.json")
if [[ $DOC == 1 ]]; then ARGS+=(--doc "$REPO/docs/BENCHMARKS.md"); fi
[[ $POSTGRES == 1 ]] && { new_pg_database; ARGS+=(--database-url "$PGURL"); }
if [[ $WITH_LS == 1 ]]; then
  LS_VENV="${LS_VENV:-$WORK/ls-venv}"
  if [[ ! -x "$LS_VENV/bin/label-studio" ]]; then
    echo "== installing label-studio==1.23.2 into $LS_VENV (takes minutes)" >&2
    python3 -m venv "$LS_VENV"
    "$LS_VENV/bin/pip" install -q --disable-pip-version-check label-studio==1.23.2 >&2
  fi
  ARGS+=(--with-label-studio --ls-venv "$LS_VENV")
  [[ $LS_ONLY == 1 ]] && ARGS+=(--ls-only)
fi
mkdir -p "$REPO/bench/results"
python3 "$HERE/bench.py" "${ARGS[@]}" "${EXTRA[@]}" &
PY_PID=$!
wait "$PY_PID"
RC=$?
PY_PID=""
cp "$WORK/results.json" "$REPO/bench/results/last-run.json" 2>/dev/null || true
exit $RC
