#!/usr/bin/env bash
# Build, test, sanitize and benchmark on a GPU machine, in one go.
#
#   bash scripts/gpu_check.sh OUT_DIR [STEP ...]     steps: build test memcheck racecheck bench demo
#                                                    (default: build test memcheck bench)
#
# Expects Paddle GPU importable (PYTHONPATH) and nvcc. Logs and results land in OUT_DIR. SHARDS
# sets how many pytest processes share the test step.
# TESTS narrows the sanitizer steps (default: every test but the exhaustive ones); BENCH_ARGS
# goes to bench.py (e.g. "--reps 15 --only paged_decode").
set -uo pipefail
out=${1:?usage: gpu_check.sh OUT_DIR [STEP ...]}
shift
steps=${*:-build test memcheck bench}
mkdir -p "$out"
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} PYTHONUNBUFFERED=1
status=0
run_step() {  # name, command...
  local name=$1; shift
  local t0=$SECONDS
  "$@" > "$out/$name.log" 2>&1
  local rc=$?
  printf '%-10s rc=%-3s %4ss  %s\n' "$name" "$rc" $((SECONDS - t0)) "$(tail -n 1 "$out/$name.log")" | tee -a "$out/summary.txt"
  [ $rc -eq 0 ] || status=1
  return $rc
}

# Build with the system compilers (/usr/bin first, for nvcc's host compiler `cc` too), whatever
# CC and CXX say. On the GPU machine a g++ wrapper, ahead on PATH and named by CC/CXX in the
# environment, built libraries whose C++ exceptions crash the process once Paddle 2.6.2 is loaded
# (measured with a five-line library that throws and catches: SIGSEGV after `import paddle`, fine
# before it and fine with /usr/bin/g++). Every error an op reports is such an exception.
# FASTATTN_KEEP_CXX=1 keeps the environment's compilers.
python=$(command -v python3)
build_env=()
if [ -z "${FASTATTN_KEEP_CXX:-}" ] && [ -x /usr/bin/g++ ]; then
  build_env=(PATH="/usr/bin:$PATH" CC=/usr/bin/gcc CXX=/usr/bin/g++ LDSHARED="/usr/bin/g++ -shared"
             LDCXXSHARED="/usr/bin/g++ -shared")
fi

# The suite in SHARDS pytest processes at once (default: half the cores, at most 8), its tests
# dealt out round-robin: on one GPU the time goes mostly to the float64 references and the CPU
# kernels, which one process runs on one core (on an H100 machine, 8 shards on 16 cores: 178 s;
# one process: over 10 minutes). Each shard's log is $out/test-N.log.
sharded_tests() {
  local cores
  cores=$(nproc)
  local shards=${SHARDS:-$(( cores / 2 > 8 ? 8 : (cores / 2 > 0 ? cores / 2 : 1) ))}
  local ids pids=() rc=0 i
  ids=$(python3 -m pytest -q -p no:cacheprovider --collect-only tests | grep '::') || return 1
  # No more shards than tests: an empty shard's pytest, given no ids, would run the whole suite.
  local count
  count=$(wc -l <<<"$ids")
  (( shards > count )) && shards=$count
  for ((i = 0; i < shards; i++)); do
    awk -v n="$shards" -v k="$i" 'NR % n == k' <<<"$ids" > "$out/test-$i.ids"
    OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 python3 -m pytest -q -p no:cacheprovider -rs \
      $(cat "$out/test-$i.ids") > "$out/test-$i.log" 2>&1 &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || rc=1
    tail -n 1 "$out/test-$i.log"
  done
  return $rc
}

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > "$out/gpu.txt" 2>&1
for step in $steps; do
  case $step in
    build) run_step build env ${build_env[@]+"${build_env[@]}"} FASTATTN_CUDA_ARCHS=${FASTATTN_CUDA_ARCHS:-90} \
             MAX_JOBS=16 "$python" setup_ops.py install \
             || { grep -n "compile failed\|error" "$out/build.log" | head -40; exit 1; } ;;
    test) run_step test sharded_tests ;;
    memcheck) run_step memcheck compute-sanitizer --tool memcheck --error-exitcode 9 \
                python3 -m pytest -q -p no:cacheprovider -x -k "not exhaustive" ${TESTS:-tests} ;;
    racecheck) run_step racecheck compute-sanitizer --tool racecheck --error-exitcode 9 \
                 python3 -m pytest -q -p no:cacheprovider -x -k "not exhaustive" ${TESTS:-tests} ;;
    bench) run_step bench python3 scripts/bench.py --out "$out" ${BENCH_ARGS:-} && cat "$out/bench.md" ;;
    demo) run_step demo python3 -m fastattn.demo && cat "$out/demo.log" ;;
    *) echo "unknown step $step"; status=1 ;;
  esac
done
exit $status
