#!/usr/bin/env bash
# paired_ratios.sh RAW_LOG: each model's requests per server-CPU-second divided by the better raw
# epoll server's OF THE SAME ROUND (runs seconds apart, so a burst of outside load on this shared
# machine hits both), per connection count: the median over the rounds, then every round's ratio.
#
#   benchmarks/paired_ratios.sh /tmp/out/raw.log      (run_net.sh prints this table itself)
#
# RAW_LOG is run_net.sh's raw.log: "# ping-pong: MODEL, N connections" lines, each followed by the
# loadgen line of that run; REPEAT rounds visit the models in the same order.
set -eu
[[ $# -eq 1 && -r $1 ]] || { echo "usage: $0 RAW_LOG" >&2; exit 2; }
awk '
  /^# ping-pong: / { model = $3; sub(/,$/, "", model); conns = $4; pending = 1; next }
  pending && /req_per_cpu_s=/ {
    pending = 0
    match($0, /req_per_cpu_s=[0-9.]+/)
    v = substr($0, RSTART + 14, RLENGTH - 14) + 0
    key = model SUBSEP conns
    n = ++count[key]
    val[key, n] = v
    if (!(conns in seen_conns)) { seen_conns[conns] = 1; conn_list[++nconns] = conns }
    if (!(model in seen_model)) { seen_model[model] = 1; model_list[++nmodels] = model }
  }
  function median(a, n,    i, j, t) {
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  END {
    print "| model | conns | paired ratio to raw (median) | every round |"
    print "|---|---:|---:|---|"
    for (c = 1; c <= nconns; c++) {
      conns = conn_list[c]
      for (m = 1; m <= nmodels; m++) {
        model = model_list[m]
        if (model == "raw-level" || model == "raw-edge") continue
        key = model SUBSEP conns
        if (!(key in count)) continue
        k = 0; list = ""
        for (r = 1; r <= count[key]; r++) {
          lv = val["raw-level" SUBSEP conns, r] + 0; ev = val["raw-edge" SUBSEP conns, r] + 0
          best = lv > ev ? lv : ev
          if (best <= 0 || val[key, r] <= 0) continue
          ratios[++k] = val[key, r] / best
          list = list sprintf("%s%.2f", (k > 1 ? " " : ""), ratios[k])
        }
        if (k) printf "| %s | %s | %.2f | %s |\n", model, conns, median(ratios, k), list
      }
    }
  }' "$1"
