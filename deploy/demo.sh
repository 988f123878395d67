#!/usr/bin/env bash
# The demo: set up what is missing, build, start rigtuned on a SQLite file
# under ./var, submit a small CPU fine-tuning job with the CLI, show its loss
# live, and print where the PEFT adapter was written.
#
#   deploy/demo.sh            (about a minute once built; the first run builds)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
var=$root/var/demo
jobs=$(nproc)

deploy/setup.sh
cmake --preset cpu >"$root/build/configure-cpu.log" 2>&1 ||
  { cat "$root/build/configure-cpu.log"; exit 1; }
cmake --build --preset cpu -j "$jobs" --target rigtuned rigtune rigtune-worker
bin=$root/build/cpu
py=$(cat build/.torch-python)

mkdir -p "$var"
if [ ! -f "$var/model/config.json" ]; then
  echo "== creating the demo base model (tiny Llama, random weights, BPE tokenizer)"
  "$py" deploy/demo/make_demo_model.py "$var/model"
fi

echo "== starting rigtuned (state in $var/state)"
rm -f "$var/ports.json"
"$bin/server/rigtuned" --state-dir "$var/state" --gpus none \
  --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --port-file "$var/ports.json" \
  --worker-binary "$bin/worker/rigtune-worker" \
  --model-root "$var" --data-root "$root/deploy/demo" --output-root "$var" \
  >"$var/rigtuned.log" 2>&1 &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null' EXIT
for _ in $(seq 100); do [ -s "$var/ports.json" ] && break; sleep 0.1; done
[ -s "$var/ports.json" ] || { cat "$var/rigtuned.log"; exit 1; }
grpc=$("$py" -c 'import json,sys;print(json.load(open(sys.argv[1]))["grpc_port"])' "$var/ports.json")
http=$("$py" -c 'import json,sys;print(json.load(open(sys.argv[1]))["http_port"])' "$var/ports.json")
echo "   gRPC 127.0.0.1:$grpc, REST and /metrics http://127.0.0.1:$http"

out=$var/out/$(date +%Y%m%d-%H%M%S)
echo "== submitting the demo job and watching it"
"$bin/client/rigtune" --server "127.0.0.1:$grpc" submit deploy/demo/job.yaml \
  --model "$var/model" --dataset "$root/deploy/demo/alpaca_demo.jsonl" --output-dir "$out" \
  --gpus 0 --watch

echo
echo "== the adapter (PEFT format) is in $out/adapter:"
ls -l "$out/adapter"
echo "== a few of the daemon's Prometheus metrics:"
curl -s "http://127.0.0.1:$http/metrics" | grep -E '^rigtune_(train_steps_total|jobs\{|job_train_loss)' || true
