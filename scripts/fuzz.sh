#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets/) for a bounded time, one after another,
# then minimizes the corpus each grew so the committed one stays small (at most FUZZ_MAX_FILES
# files and FUZZ_MAX_KB KiB per target).
#
#   npm run fuzz                      # every target, 60 s each
#   FUZZ_SECONDS=300 npm run fuzz     # longer
#   FUZZ_TARGETS="ws_decoder events" bash scripts/fuzz.sh
#
# Environment:
#   FUZZ_SECONDS      time per target (default 60)
#   FUZZ_TARGETS      space-separated targets (default: all of `cargo fuzz list`)
#   FUZZ_TIMEOUT      seconds one input may take before it counts as a hang (default 20)
#   FUZZ_JOBS         parallel libFuzzer workers per target (default 1)
#   FUZZ_MAX_FILES    corpus files kept per target after minimizing (default 300)
#   FUZZ_MAX_KB       corpus size kept per target, KiB (default 2048)
#
# Corpora: fuzz/corpus/<target>/ (grown by the fuzzer, minimized, committed), plus the
# hand-written seeds fuzz/seeds/<target>/ and dictionary fuzz/dict/<target>.dict (read only).
# A crash or hang stops that target; the others still run; the script then exits 1 and lists
# the artifacts (fuzz/artifacts/<target>/…). Logs: fuzz/target/fuzz-logs/<target>.log.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fuzz_dir="$root/fuzz"
seconds="${FUZZ_SECONDS:-60}"
timeout="${FUZZ_TIMEOUT:-20}"
jobs="${FUZZ_JOBS:-1}"
max_files="${FUZZ_MAX_FILES:-300}"
max_kb="${FUZZ_MAX_KB:-2048}"
toolchain="+nightly"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: installing it (cargo install cargo-fuzz --locked)"
  cargo install cargo-fuzz --locked
fi
if ! cargo "$toolchain" --version >/dev/null 2>&1; then
  echo "cargo-fuzz needs a nightly toolchain: rustup toolchain install nightly" >&2
  exit 2
fi

cd "$root"
if [[ -n "${FUZZ_TARGETS:-}" ]]; then
  read -r -a targets <<<"$FUZZ_TARGETS"
else
  mapfile -t targets < <(cargo "$toolchain" fuzz list)
fi

echo "building ${#targets[@]} fuzz targets (release, debug assertions, AddressSanitizer)…"
cargo "$toolchain" fuzz build

log_dir="$fuzz_dir/target/fuzz-logs"
mkdir -p "$log_dir"
failed=()
summary=()

# Keeps at most $max_files files and $max_kb KiB in a corpus, dropping the largest first.
limit_corpus() {
  local dir="$1" count bytes
  count=$(find "$dir" -type f | wc -l)
  bytes=$(find "$dir" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')
  while ((count > max_files || bytes > max_kb * 1024)); do
    local largest
    largest=$(find "$dir" -type f -printf '%s %p\n' | sort -n | tail -1)
    rm -f -- "${largest#* }"
    bytes=$((bytes - ${largest%% *}))
    count=$((count - 1))
  done
}

for target in "${targets[@]}"; do
  corpus="$fuzz_dir/corpus/$target"
  seeds="$fuzz_dir/seeds/$target"
  dict="$fuzz_dir/dict/$target.dict"
  log="$log_dir/$target.log"
  mkdir -p "$corpus" "$seeds"
  extra=()
  [[ -f "$dict" ]] && extra+=("-dict=$dict")
  ((jobs > 1)) && extra+=("-fork=$jobs")
  echo
  echo "=== $target: ${seconds}s (corpus $(find "$corpus" -type f | wc -l) files + $(find "$seeds" -type f | wc -l) seeds)"
  status=0
  cargo "$toolchain" fuzz run "$target" "$corpus" "$seeds" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout="$timeout" \
    -print_final_stats=1 "${extra[@]}" >"$log" 2>&1 || status=$?

  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -oE '(cov|ft): [0-9]+' "$log" | tail -2 | tr '\n' ' ' || true)
  if ((status != 0)); then
    artifacts=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log")
    failed+=("$target")
    if [[ -z "$artifacts" ]]; then
      # No input was blamed: the build or the fuzzer itself failed.
      echo "!!! $target: cargo fuzz failed (exit $status) without a crash input; log: $log"
      tail -40 "$log"
      summary+=("$(printf '%-15s ERROR  (exit %s, no crash input; see %s)' "$target" "$status" "$log")")
      continue
    fi
    echo "!!! $target CRASHED (exit $status) after ${execs:-?} execs; log: $log"
    grep -m1 -A4 -E "panicked at|ERROR: (libFuzzer|AddressSanitizer)|==ERROR" "$log" || tail -30 "$log"
    for artifact in $artifacts; do
      echo "    artifact: $artifact"
      echo "    reproduce: cargo +nightly fuzz run $target $artifact"
    done
    summary+=("$(printf '%-15s CRASH  execs=%s exec/s=%s %s artifacts: %s' "$target" "${execs:-?}" "${rate:-?}" "$cov" "$(echo $artifacts)")")
    # The crash input is in fuzz/artifacts/, not in the corpus: the corpus is still minimized.
  fi

  # Keep what the fuzzer found, minimized (every feature kept); if that is still over the file
  # limit, a set-cover merge on edge coverage alone (every edge kept, far fewer files); then,
  # only if still needed, drop the largest inputs.
  cmin_log="$log_dir/$target.cmin.log"
  if cargo "$toolchain" fuzz cmin "$target" "$corpus" -- -rss_limit_mb=2048 -timeout="$timeout" >"$cmin_log" 2>&1; then
    if (($(find "$corpus" -type f | wc -l) > max_files)); then
      cargo "$toolchain" fuzz cmin "$target" "$corpus" -- -rss_limit_mb=2048 -timeout="$timeout" \
        -set_cover_merge=1 -use_counters=0 >>"$cmin_log" 2>&1 ||
        echo "warning: set-cover minimizing of $target failed; see $cmin_log"
    fi
    limit_corpus "$corpus"
  else
    echo "warning: cmin of $target failed (corpus kept unminimized); see $cmin_log"
  fi
  files=$(find "$corpus" -type f | wc -l)
  kb=$(du -sk --apparent-size "$corpus" | cut -f1)
  if ((status != 0)); then
    summary[-1]+=" corpus=${files} files/${kb} KiB"
    continue
  fi
  echo "ok  $target: ${execs:-?} execs, ${rate:-?} exec/s, ${cov}; corpus ${files} files, ${kb} KiB"
  summary+=("$(printf '%-15s ok     execs=%s exec/s=%s %s corpus=%s files/%s KiB' "$target" "${execs:-?}" "${rate:-?}" "$cov" "$files" "$kb")")
done

echo
echo "=== summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
if ((${#failed[@]} > 0)); then
  echo "failed: ${failed[*]} (artifacts under fuzz/artifacts/, logs under fuzz/target/fuzz-logs/)" >&2
  exit 1
fi
