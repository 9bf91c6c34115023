#!/bin/sh
# The pictures in benchmarks/RESULTS.md and docs/demos.md, made with gnuplot (Debian's gnuplot-nox)
# into docs/img/. Each runs its experiment (or reads run_net.sh's log) and prints the data it plots.
#
#   sh benchmarks/plots.sh models RUN_NET_OUT_DIR   requests per server-CPU-second vs connections, every
#                                                   server model, from a run_net.sh output directory
#                                                   (the median of each point's runs)
#   sh benchmarks/plots.sh offload [BUILD_DIR]      seed 000's req/s meter second by second while a
#                                                   fib(43) hog runs, fib_server without and with
#                                                   --offload (server core 0, clients core 1; ~40 s)
#   sh benchmarks/plots.sh stall [BUILD_DIR]        sleep_stall's longest ticker gap per run (~7 s)
set -eu
cd "$(dirname "$0")/.."
IMG=${IMG:-docs/img}  # IMG=DIR writes the pictures elsewhere (the test does)
mkdir -p $IMG
what=${1:?usage: plots.sh models OUT_DIR | offload [BUILD_DIR] | stall [BUILD_DIR]}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

case $what in
models)
  log=${2:?plots.sh models: give the output directory of run_net.sh (or its raw.log)}
  [ -d "$log" ] && log=$log/raw.log
  # raw.log: "# ping-pong: MODEL, N connections", then loadgen's line with req_per_cpu_s=.
  awk '
    /^# ping-pong: / { m = $3; sub(/,$/, "", m); c = $4; pending = 1; next }
    pending && /req_per_cpu_s=/ { pending = 0; match($0, /req_per_cpu_s=[0-9.]+/); v[m, c, ++n[m, c]] = substr($0, RSTART + 14, RLENGTH - 14) + 0
      if (!(m in seen)) { seen[m] = 1; models[++nm] = m } if (!(c in cs)) { cs[c] = 1; conns[++nc] = c } }
    END {
      for (i = 1; i <= nm; i++) {
        printf "\"%s\"\n", models[i]
        for (j = 1; j <= nc; j++) {
          k = n[models[i], conns[j]]; if (!k) continue
          for (a = 1; a <= k; a++) x[a] = v[models[i], conns[j], a]
          for (a = 2; a <= k; a++) { t = x[a]; for (b = a - 1; b >= 1 && x[b] > t; b--) x[b + 1] = x[b]; x[b + 1] = t }
          printf "%s %.0f\n", conns[j], (k % 2) ? x[(k + 1) / 2] : (x[k / 2] + x[k / 2 + 1]) / 2
        }
        printf "\n\n"
      }
    }' "$log" > "$tmp/models.dat"
  cat "$tmp/models.dat"
  gnuplot <<GP
set terminal pngcairo noenhanced size 900,520 font ",11"
set output "$IMG/net_models.png"
set title "Echo ping-pong: requests per server-CPU-second (server on one core)"
set logscale x
set xlabel "concurrent connections"
set ylabel "requests per server CPU-second"
set format y "%.0s%c"
set key outside right
set grid
set yrange [0:*]
# nine distinguishable colours (gnuplot's default cycle repeats after eight)
colors = "#4b0082 #1b9e77 #56b4e9 #e69f00 #d4c20a #0072b2 #d55e00 #000000 #cc79a7"
plot for [i=0:8] "$tmp/models.dat" index i using 1:2 with linespoints lw 2 pt (i % 7) + 1 lc rgb word(colors, i + 1) title columnheader(1)
GP
  ;;
offload)
  B=${2:-build}
  for mode in plain offload; do
    flag=""; [ $mode = offload ] && flag=--offload
    taskset -c 0 "$B/demos/fib_server" --model=fiber $flag --port 25200 >/dev/null 2>&1 &
    server=$!
    sleep 0.5
    taskset -c 1 "$B/demos/fiber_client" --port 25200 --rate --duration 16 > "$tmp/meter_$mode.txt" 2>&1 &
    meter=$!
    sleep 4
    taskset -c 1 "$B/demos/fiber_client" --port 25200 --line 43 --timeout 60 > "$tmp/hog_$mode.txt" 2>&1 || true
    wait $meter || true
    kill -INT $server
    wait $server || true
    # "N reqs/sec" lines, one per second
    grep -o '^[0-9]* reqs/sec' "$tmp/meter_$mode.txt" | awk '{print NR, $1}' > "$tmp/$mode.dat"
    echo "== $mode: hog $(grep -o 'took [0-9]* ms' "$tmp/hog_$mode.txt")"
    cat "$tmp/$mode.dat"
  done
  gnuplot <<GP
set terminal pngcairo noenhanced size 900,420 font ",11"
set output "$IMG/offload_meter.png"
set title "Seed 000's req/s meter while one client asks fib(43) from second 4 (fib_server, fiber model)"
set xlabel "second"
set ylabel "requests per second"
set format y "%.0s%c"
set yrange [0:*]
set key top right
set grid
plot "$tmp/plain.dat" using 1:2 with linespoints lw 2 title "fib on the hub", \
     "$tmp/offload.dat" using 1:2 with linespoints lw 2 title "--offload (fib on the thread pool)"
GP
  ;;
stall)
  B=${2:-build}
  "$B/demos/sleep_stall" > "$tmp/stall.txt"
  cat "$tmp/stall.txt"
  # rows: run name, then the four tickers' gaps before "ok"/"STALLED"
  awk '$NF == "ok" || $NF == "STALLED" { max = 0; for (i = NF - 4; i < NF; i++) if ($i + 0 > max) max = $i + 0; print $1, max }' \
    "$tmp/stall.txt" > "$tmp/stall.dat"
  gnuplot <<GP
set terminal pngcairo noenhanced size 800,400 font ",11"
set output "$IMG/sleep_stall.png"
set title "sleep_stall: the longest gap of 4 tickers (every 50 ms) while another greenlet sleeps 1 s"
set style data histograms
set style fill solid 0.8
set boxwidth 0.6
set ylabel "longest gap, ms"
set yrange [0:1200]
set grid y
set xtics rotate by -20
plot "$tmp/stall.dat" using 2:xtic(1) notitle lc rgb "#4477aa", "" using 0:(\$2 + 40):(sprintf("%d", \$2)) with labels notitle
GP
  ;;
*)
  echo "plots.sh: unknown picture '$what' (models, offload, stall)" >&2
  exit 2
  ;;
esac
echo "wrote $IMG"
