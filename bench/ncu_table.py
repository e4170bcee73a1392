"""Short table of an `ncu --csv --page raw` report on stdin: kernel, time and throughputs."""

import csv
import sys

METRICS = {
    "dram%": "dram__throughput.avg.pct_of_peak_sustained_elapsed",
    "sm%": "sm__throughput.avg.pct_of_peak_sustained_elapsed",
    "warps%": "sm__warps_active.avg.pct_of_peak_sustained_active",
}
TIME = "gpu__time_duration.sum"

rows = list(csv.reader(line for line in sys.stdin if line.startswith('"')))
if len(rows) < 3:
    sys.exit("ncu_table: no kernel rows in the report")
head, units, kernels = rows[0], rows[1], rows[2:]
col = {name: i for i, name in enumerate(head)}
to_us = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3}[
    units[col[TIME]]
]
print(f"{'kernel':<32} {'us':>9}" + "".join(f" {label:>7}" for label in METRICS))
for row in kernels:
    name = row[col["Kernel Name"]].split("(")[0].split("<")[0][-32:]
    microseconds = float(row[col[TIME]].replace(",", "")) * to_us  # ncu groups thousands
    line = f"{name:<32} {microseconds:9.1f}"
    print(line + "".join(f" {row[col[metric]]:>7}" for metric in METRICS.values()))
