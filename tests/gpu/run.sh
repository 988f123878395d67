#!/usr/bin/env bash
# GPU checks and benchmarks, on a machine with NVIDIA GPUs.
#
#   tests/gpu/run.sh [STAGE...]      stages: build tests golden nf4 engine arch fit24 peer profile fsdp big1 curve
#                                    stream70 longctx daemon oom plan types
#                                    (default: build tests)
#   BUILD_TARGETS="a b" tests/gpu/run.sh build ...   build only those targets
#
# Builds the cuda preset (kernels for sm_80/86/89/90, NCCL) into $BUILD
# (default /tmp/rigtune-cuda), runs what the stages ask for, writes full logs
# to $OUT (default /tmp/rigtune-gpu-out) and prints a summary table last.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$(pwd)
OUT=${OUT:-/tmp/rigtune-gpu-out}
BUILD=${BUILD:-/tmp/rigtune-cuda}
mkdir -p "$OUT"
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(build tests)
summary=()
note() { summary+=("$1"); echo "== $1"; }

if [ -f .device/device-env.sh ]; then
  source .device/device-env.sh .device/debs
  # The carried libsystemd-dev links to a libsystemd.so.0 the machine itself provides.
  lib=/opt/devdeps/usr/lib/x86_64-linux-gnu
  [ -e "$lib/libsystemd.so" ] || ln -sf /usr/lib/x86_64-linux-gnu/libsystemd.so.0 "$lib/libsystemd.so"
fi
py=$(command -v python3)
gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpus.txt" 2>&1

# The peers' Python packages (bitsandbytes, Unsloth, transformers), where
# they travel with the checkout (../shared/device/README.md).
peer_python() {
  if [ -f .device/peer-site.tgz ] && [ ! -d /tmp/peer-site ]; then
    mkdir -p /tmp/peer-site && tar xzf .device/peer-site.tgz -C /tmp/peer-site
  fi
  [ -d /tmp/peer-site ] && export PYTHONPATH=/tmp/peer-site${PYTHONPATH:+:$PYTHONPATH}
  return 0
}

for stage in "${stages[@]}"; do
  case $stage in
    build)
      start=$(date +%s)
      cmake --preset cuda -B "$BUILD" -DRIGTUNE_PYTHON="$py" >"$OUT/configure.log" 2>&1 &&
        cmake --build "$BUILD" -j "$(nproc)" ${BUILD_TARGETS:+--target $BUILD_TARGETS} \
          >"$OUT/build.log" 2>&1
      rc=$?
      [ $rc -ne 0 ] && { tail -n 40 "$OUT/configure.log" "$OUT/build.log"; note "build: FAILED"; break; }
      note "build: ok in $(( $(date +%s) - start )) s" ;;
    tests)
      ctest --test-dir "$BUILD" -L gpu --output-on-failure >"$OUT/gpu-tests.log" 2>&1
      note "gpu tests: $(grep -E 'tests passed|tests failed' "$OUT/gpu-tests.log" | tail -1)"
      grep -E "Failed|\*\*\*" "$OUT/gpu-tests.log" | head -20 ;;
    golden)  # the engine vs transformers + PEFT in bf16 on the GPU
      RIGTUNE_ENGINE_GOLDEN_TOOL="$BUILD/tests/golden/engine_golden_tool" \
        "$py" tests/golden/test_engine.py >"$OUT/golden-bf16.md" 2>"$OUT/golden-bf16.log"
      note "engine vs transformers+PEFT, bf16 on the GPU (exit $?):"; cat "$OUT/golden-bf16.md" ;;
    types)  # base formats and DoRA: bf16 golden on the GPU, then 7B tokens/s and peak memory
      RIGTUNE_ENGINE_GOLDEN_TOOL="$BUILD/tests/golden/engine_golden_tool" \
        "$py" tests/golden/test_base_types.py >"$OUT/types-golden.md" 2>"$OUT/types-golden.log"
      note "base formats + DoRA vs transformers+PEFT, bf16 on the GPU (exit $?):"
      cat "$OUT/types-golden.md"
      for bm in nf4/lora bf16/lora hqq4/lora nf4/dora bf16/dora; do
        "$BUILD/tests/bench/train_bench" --model random:llama2-7b --batch 4 --seq 2048 --steps 6 \
          --base "${bm%/*}" --method "${bm#*/}" >>"$OUT/types-bench.md" 2>>"$OUT/types-bench.log"
      done
      note "Llama-2-7B, 4 x 2048, r=64, by train.base/train.method (1 GPU):"
      cat "$OUT/types-bench.md"
      # Full fine-tuning of a 1B-class shape: every weight, bf16 compute,
      # float32 masters and AdamW moments on the one GPU.
      "$BUILD/tests/bench/train_bench" --model random:llama3.2-1b --batch 4 --seq 2048 --steps 6 \
        --base bf16 --method full >"$OUT/types-full.md" 2>"$OUT/types-full.log"
      note "Llama-3.2-1B shape, 4 x 2048, train.method full (1 GPU; exit $?):"
      cat "$OUT/types-full.md"
      # Block expansion over an NF4 base: 4 copies of 32 layers train.
      "$BUILD/tests/bench/train_bench" --model random:llama2-7b --batch 4 --seq 2048 --steps 6 \
        --base nf4 --method llama_pro --expand-every 8 >"$OUT/types-llama-pro.md" \
        2>"$OUT/types-llama-pro.log"
      note "Llama-2-7B, 4 x 2048, train.method llama_pro, expand_every 8 (1 GPU; exit $?):"
      cat "$OUT/types-llama-pro.md" ;;
    nf4)
      "$BUILD/tests/bench/nf4_dequant_bench" --iters 100 >"$OUT/nf4-bench.md" 2>&1
      note "4-bit dequantize bandwidth (nf4, hqq4):"; cat "$OUT/nf4-bench.md" ;;
    engine)
      for shape in llama2-7b llama3-8b; do
        "$BUILD/tests/bench/train_bench" --model random:$shape --batch 4 --seq 2048 --steps 6 \
          >>"$OUT/engine-bench.md" 2>>"$OUT/engine-bench.log"
      done
      note "engine (1 GPU):"; cat "$OUT/engine-bench.md" ;;
    arch)  # a step of each architecture family's shape (Gemma 2 attends eagerly: soft-capping)
      for shape in mistral-nemo-12b qwen2.5-7b qwen3-8b gemma2-9b gemma3-1b phi3-mini; do
        "$BUILD/tests/bench/train_bench" --model random:$shape --batch 2 --seq 2048 --steps 5 \
          >>"$OUT/arch-bench.md" 2>>"$OUT/arch-bench.log"
      done
      note "architectures (1 GPU):"; cat "$OUT/arch-bench.md" ;;
    fit24)  # one GPU capped at 22 GiB, as on a 24 GB card
      for shape in llama2-13b llama3-8b; do
        "$BUILD/tests/bench/train_bench" --model random:$shape --batch 4 --seq 2048 --steps 5 \
          --max-gpu-memory-gib 22 >>"$OUT/fit24.md" 2>>"$OUT/fit24.log"
      done
      note "one GPU capped at 22 GiB:"; cat "$OUT/fit24.md" ;;
    peer)  # rigtune and its peers side by side, same shapes, same call (one process each)
      peer_python
      echo "| system | shape | batch x seq | ckpt | tok/s | step s | peak alloc GiB |" >"$OUT/peer-bench.md"
      echo "|---|---|---|---|---|---|---|" >>"$OUT/peer-bench.md"
      for shape in ${PEER_SHAPES:-llama2-7b llama3-8b}; do
        for flags in "" "--activation-offload" "--activation-offload --recompute keep_mlp"; do
          "$BUILD/tests/bench/train_bench" --model random:$shape --batch 4 --seq 2048 --steps 6 \
            $flags 2>>"$OUT/peer-bench.log" | awk -F' *[|] *' -v s=$shape -v f="$flags" '/^[|]/ {
              printf "| rigtune %s | %s | %s | %s | %s | %s | %s |\n", f, s, $4, $5, $7, $8, $9 }' \
            >>"$OUT/peer-bench.md"
        done
        for peer in ${PEER_SYSTEMS:-unsloth hf-bnb}; do
          "$py" tests/bench/qlora_peer_bench.py --peer $peer --shape $shape --batch 4 --seq 2048 \
            --steps 6 2>>"$OUT/peer-bench.log" | grep '^|' >>"$OUT/peer-bench.md" ||
            echo "| $peer | $shape | failed: see peer-bench.log | | | | |" >>"$OUT/peer-bench.md"
        done
        [ -n "${PEER_SKIP_BF16:-}" ] ||  # transformers + PEFT on a bf16 base
          "$py" tests/bench/hf_peft_bench.py --shape $shape --batch 4 --seq 2048 --steps 6 \
            2>>"$OUT/peer-bench.log" | grep '^|' >>"$OUT/peer-bench.md"
      done
      rm -rf /tmp/peer-models  # the saved random models (~30 GB)
      note "rigtune vs Unsloth vs HF+PEFT (+bitsandbytes NF4), 1 GPU:"; cat "$OUT/peer-bench.md" ;;
    profile)  # where the 7B step's time goes, phase by phase (CUDA events)
      "$BUILD/tests/bench/train_bench" --model random:llama2-7b --batch 4 --seq 2048 --steps 4 \
        --profile >"$OUT/profile.md" 2>"$OUT/profile.log"
      note "llama2-7b step profile (exit $?):"; cat "$OUT/profile.md"
      # With offloaded layer inputs: full recompute against keep_mlp (the
      # gate/up products kept from the forward, no MLP GEMMs in the recompute).
      for rc in full keep_mlp; do
        "$BUILD/tests/bench/train_bench" --model random:llama2-7b --batch 4 --seq 2048 --steps 6 \
          --activation-offload --recompute $rc --profile >"$OUT/profile-$rc.md" \
          2>"$OUT/profile-$rc.log"
        note "llama2-7b, activation offload, recompute $rc (exit $?):"; cat "$OUT/profile-$rc.md"
      done ;;
    fsdp)  # Llama-2-70B over two ranks; on a one-GPU machine both share it over Gloo
      backend=auto
      [ "$gpus" -lt 2 ] && backend=gloo
      run2() {  # two ranks of train_bench with the given flags
        local port=$((29600 + RANDOM % 1000)) pids=()
        for r in 0 1; do
          echo "# $*" >>"$OUT/fsdp-bench-rank$r.log"
          RANK=$r LOCAL_RANK=$r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
            "$BUILD/tests/bench/train_bench" --backend $backend "$@" >>"$OUT/fsdp-bench.md" \
            2>>"$OUT/fsdp-bench-rank$r.log" &
          pids+=($!)
        done
        wait "${pids[@]}"
      }
      m=random:llama2-70b
      runs=("--batch 2 --cpu-offload --activation-offload --max-gpu-memory-gib 22"
            "--batch 2 --cpu-offload --max-gpu-memory-gib 22"
            "--batch 1 --r 16 --activation-offload --max-gpu-memory-gib 22")
      # Throughput means something only with a GPU per rank: then also uncapped.
      [ "$gpus" -ge 2 ] && runs+=("--batch 4")
      [ -n "${FSDP_RUNS:-}" ] && IFS=';' read -ra runs <<<"$FSDP_RUNS"  # "flags;flags;..."
      for args in "${runs[@]}"; do
        run2 --model $m --seq 2048 --steps ${FSDP_STEPS:-3} $args
      done
      grep -hE "holds|peak host|step [0-9]|rank [01]:" "$OUT"/fsdp-bench-rank*.log | tail -n 40
      note "FSDP, 2 ranks ($backend backend, $gpus GPU(s)):"; cat "$OUT/fsdp-bench.md" ;;
    big1)  # Llama-2-70B on one GPU, uncapped: the per-GPU compute rate
      for b in ${BIG1_BATCHES:-2 4}; do
        "$BUILD/tests/bench/train_bench" --model random:llama2-70b --batch $b --seq 2048 --steps 4 \
          >>"$OUT/big1.md" 2>>"$OUT/big1.log"
      done
      note "Llama-2-70B on one GPU, uncapped:"; cat "$OUT/big1.md" ;;
    stream70)  # Llama-2-70B on ONE GPU capped at 22 GiB, streamed from host memory
      bench() {  # one train_bench run; its table row to stream70.md
        echo "# train_bench $*" >>"$OUT/stream70.log"
        "$BUILD/tests/bench/train_bench" --seq 2048 "$@" >>"$OUT/stream70.md" 2>>"$OUT/stream70.log"
      }
      m=random:llama2-70b s=${STREAM_STEPS:-3}
      streamed="--cpu-offload --activation-offload --offload-optimizer --max-gpu-memory-gib 22"
      bench --model $m --batch 2 --steps $s $streamed   # (a) capped, streamed
      bench --model $m --batch 2 --steps $s             # (b) uncapped, on the device
      bench --model $m --batch 4 --steps $s $streamed   # capped, batch 4 (if it fits)
      # Overlap: 7B at the same batch with and without streaming.
      bench --model random:llama2-7b --batch 4 --steps 4
      bench --model random:llama2-7b --batch 4 --steps 4 --cpu-offload --offload-optimizer
      grep -hE "^# |model ready|host memory|step [0-9]|rank 0: [A-Z]" "$OUT/stream70.log" | tail -n 40
      note "streaming (70B capped vs uncapped, batch 2; 70B batch 4 capped; 7B without/with):"
      cat "$OUT/stream70.md"
      awk -F'|' '$2 ~ /70b/ && $4 ~ /^ *2 x/ { if ($6 ~ /optim/) c = $7; else u = $7 }
        END { if (u > 0) printf "70B batch 2, capped/uncapped tokens/s: %.0f%% (target >= 70%%)\n", 100 * c / u }' \
        "$OUT/stream70.md" ;;
    longctx)  # Llama-3.1-8B, batch 1, r=32, ONE GPU capped at 22 GiB: the longest context that trains
      flags=${LONGCTX_FLAGS:---activation-offload}
      printf '| tokens | tokens/s | step s | peak alloc GiB | peak reserved GiB | planned GiB | MLP chunk | result |\n' \
        >"$OUT/longctx.md"
      printf '|---|---|---|---|---|---|---|---|\n' >>"$OUT/longctx.md"
      for seq in ${LONGCTX_SEQS:-65536 81920 98304 114688 131072}; do
        log="$OUT/longctx-$seq.log"
        # The plan is printed, not obeyed: the run says what really fits.
        RIGTUNE_IGNORE_MEMORY_PLAN=1 "$BUILD/tests/bench/train_bench" --model random:llama3.1-8b \
          --batch 1 --seq "$seq" --steps 3 --r 32 --max-gpu-memory-gib 22 $flags \
          >"$OUT/longctx-$seq.md" 2>"$log"
        rc=$?
        planned=$(grep -om1 'memory plan per GPU ([0-9]* ranks*): [0-9.]* GiB' "$log" | grep -o '[0-9.]* GiB$')
        chunk=$(grep -om1 'MLP in chunks of [0-9]*' "$log" | grep -o '[0-9]*$')
        row=$(grep -m1 -E '^\| random:' "$OUT/longctx-$seq.md")
        if [ $rc -eq 0 ] && [ -n "$row" ]; then
          echo "$row" | awk -F'|' -v s="$seq" -v p="$planned" -v c="${chunk:-untiled}" \
            '{ printf "| %s | %s | %s | %s | %s | %s | %s | trains |\n", s, $7, $8, $9, $10, p, c }' \
            >>"$OUT/longctx.md"
        else
          why=$(grep -m1 'out of memory' "$log" || tail -1 "$log")
          echo "| $seq | | | | | $planned | ${chunk:-untiled} | failed (exit $rc): $why |" >>"$OUT/longctx.md"
          break  # longer contexts need more memory still
        fi
      done
      note "long context, random:llama3.1-8b batch 1 r=32 capped at 22 GiB, $flags, 3 steps:"
      cat "$OUT/longctx.md" ;;
    curve)  # CURVE_STEPS (200) steps on real text (the demo model and data), one job per
            # mode: keep_mlp's loss curve against full recompute's in bf16, and bf16's
            # own distance from fp32 (the noise floor); activation offload on
      peer_python
      dir=$(mktemp -d)
      "$py" deploy/demo/make_demo_model.py "$dir/model" >"$OUT/curve-model.log" 2>&1 ||
        { note "curve: the demo model was not made (see curve-model.log)"; continue; }
      logs=()
      for mode in fp32-full bf16-full bf16-keep_mlp; do
        printf '{"model": "%s", "output_dir": "%s", "dataset": {"path": "%s", "format": "alpaca",
          "packing": true}, "lora": {"r": 8, "alpha": 16}, "optim": {"lr": 0.003,
          "schedule": "cosine", "warmup_steps": 4, "weight_decay": 0.0}, "train": {
          "context_length": 256, "batch_size": 4, "epochs": 1000, "max_steps": %d, "dtype": "%s",
          "device": "cuda", "seed": 7, "recompute": "%s"}, "dist": {"activation_offload": true}}' \
          "$dir/model" "$dir/out-$mode" "$root/deploy/demo/alpaca_demo.jsonl" "${CURVE_STEPS:-200}" \
          "${mode%%-*}" "${mode#*-}" >"$dir/$mode.json"
        "$BUILD/worker/rigtune-worker" --job "$dir/$mode.json" >"$OUT/curve-$mode.log" 2>&1
        note "curve $mode: exit $? ($(grep -c '^step ' "$OUT/curve-$mode.log") steps)"
        logs+=("$OUT/curve-$mode.log")
      done
      # Reference: bf16 with full recompute.
      "$py" tests/gpu/loss_curve.py "${logs[1]}" "${logs[2]}" "${logs[0]}" | tee "$OUT/curve.md" ;;
    daemon)  # one job through rigtuned on the GPU, its loss streamed to `rigtune watch`
      state=$(mktemp -d)
      "$BUILD/server/rigtuned" --state-dir "$state" --gpus auto --grpc-listen 127.0.0.1:50151 \
        --http-listen 127.0.0.1:8181 --worker-binary "$BUILD/worker/rigtune-worker" \
        >"$OUT/rigtuned.log" 2>&1 &
      daemon=$!
      sleep 2
      "$BUILD/client/rigtune" --server 127.0.0.1:50151 submit --model random:llama2-7b \
        --gpus 1 --output-dir "$state/out" --set train.context_length=2048 \
        --set train.batch_size=4 --max-steps 8 --watch >"$OUT/daemon-watch.txt" 2>&1
      note "daemon job: exit $? ($(tail -1 "$OUT/daemon-watch.txt"))"
      curl -s 127.0.0.1:8181/metrics | grep -E '^rigtune_(job_train_loss|train_steps_total|gpu_)' \
        >"$OUT/daemon-metrics.txt"
      # NVML gauges: one series per GPU and quantity, next to nvidia-smi's view.
      nvml=$(grep -c '^rigtune_gpu_memory_total_bytes{' "$OUT/daemon-metrics.txt")
      note "NVML gauges: $nvml GPU(s) of $gpus in /metrics (want equal):"
      grep -E '^rigtune_gpu_(memory_used|memory_total|utilization|power|temperature)' \
        "$OUT/daemon-metrics.txt"
      nvidia-smi --query-gpu=index,name,memory.used,memory.total,utilization.gpu,power.draw,temperature.gpu \
        --format=csv
      kill $daemon; wait $daemon 2>/dev/null ;;
    oom)  # a job under an impossible cap: FAILED with one line, no backtrace in its log
      job=$(mktemp --suffix=.json)
      printf '{"model": "random:llama2-7b", "output_dir": "%s", "train": {"batch_size": 4,
        "context_length": 2048, "max_steps": 2}, "dist": {"max_gpu_memory_gib": 5}}' \
        "$(mktemp -d)" >"$job"
      RIGTUNE_IGNORE_MEMORY_PLAN=1 "$BUILD/worker/rigtune-worker" --job "$job" >"$OUT/oom.log" 2>&1
      rc=$?
      frames=$(grep -c "frame #" "$OUT/oom.log")
      reason=$(grep "^rigtune-worker: " "$OUT/oom.log" | tail -1)
      ok=no
      [ $rc -eq 1 ] && [ "$frames" -eq 0 ] && [[ $reason == *"out of memory on cuda:0"* ]] && ok=yes
      note "oom: $ok (exit $rc, $frames 'frame #' lines): $reason" ;;
    plan)  # the planner's numbers next to measured peaks (docs/benchmarks.md)
      "$BUILD/client/rigtune" plan --model random:llama3.1-8b --set train.batch_size=1 \
        --set train.context_length=${LONG_CTX:-81920} --set lora.r=32 \
        --set dist.max_gpu_memory_gib=22 --set dist.activation_offload=true >"$OUT/plan.txt" 2>&1
      note "plan, Llama-3.1-8B long context (exit $?):"; cat "$OUT/plan.txt"
      # Llama-2-70B streamed on one GPU WITHOUT activation offload: the plan
      # (which now refuses it) next to a run that ignores the plan.
      "$BUILD/client/rigtune" plan --model random:llama2-70b --set train.batch_size=2 \
        --set train.context_length=2048 --set dist.max_gpu_memory_gib=22 \
        --set dist.cpu_offload=true >"$OUT/plan70.txt" 2>&1
      note "plan, Llama-2-70B batch 2, cpu_offload only, capped 22 GiB (exit $?):"
      cat "$OUT/plan70.txt"
      RIGTUNE_IGNORE_MEMORY_PLAN=1 "$BUILD/tests/bench/train_bench" --model random:llama2-70b \
        --batch 2 --seq 2048 --steps 2 --cpu-offload --max-gpu-memory-gib 22 \
        >"$OUT/plan70-run.md" 2>"$OUT/plan70-run.log"
      note "run, same job, plan ignored (exit $?): $(grep -m1 -E '^\| random:' "$OUT/plan70-run.md" ||
        grep -m1 'out of memory' "$OUT/plan70-run.log" || tail -1 "$OUT/plan70-run.log")" ;;
    *) echo "unknown stage $stage"; exit 2 ;;
  esac
done

echo
echo "== summary ($gpus GPU(s): $(head -1 "$OUT/gpus.txt"))"
printf '%s\n' "${summary[@]}"
