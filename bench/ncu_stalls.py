"""Where a kernel's warps stall, per SASS instruction, from `ncu --page source --csv
--print-source sass` of a report taken with the SourceCounters section (stdin).

Prints the instructions with the most warp-stall samples (address, share of all samples, the
instruction) and the sample totals per stall reason over the whole kernel; the columns ncu
names differ between versions, so every column whose name mentions samples is summed.
"""

import csv
import sys

TOP = int(sys.argv[1]) if len(sys.argv) > 1 else 40

# The first row names the kernel; the header row starts with "Address","Source".
rows = list(csv.reader(line for line in sys.stdin if line.startswith('"')))
start = next((i for i, row in enumerate(rows) if row[:2] == ["Address", "Source"]), None)
if start is None:
    sys.exit("ncu_stalls: no per-instruction header (Address, Source) on stdin")
head, body = rows[start], [row for row in rows[start + 1 :] if len(row) == len(rows[start])]


def column(*words):
    """The first column whose name contains all `words` (case-insensitive)."""
    for i, name in enumerate(head):
        if all(word.lower() in name.lower() for word in words):
            return i
    return None


def number(text):
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0


source, address = column("Source"), column("Address")
samples = column("Warp Stall Sampling (All")
if samples is None:
    samples = column("Sampl")
if samples is None:
    sys.exit("ncu_stalls: no sampling column; columns: " + ", ".join(head))
total = sum(number(row[samples]) for row in body) or 1.0
print(f"columns: {len(head)}; instructions: {len(body)}; samples: {total:.0f}")
ranked = sorted(body, key=lambda row: -number(row[samples]))[:TOP]
for row in ranked:
    where = row[address] if address is not None else ""
    text = row[source] if source is not None else ""
    print(f"{100 * number(row[samples]) / total:6.2f}% {where:>8} {text[:90]}")

reasons = [
    (name, sum(number(row[i]) for row in body))
    for i, name in enumerate(head)
    if i != samples and ("stall" in name.lower() or "sampl" in name.lower())
]
reasons = [(name, value) for name, value in reasons if value > 0]
if reasons:
    print("\nper column (whole kernel):")
    for name, value in sorted(reasons, key=lambda item: -item[1])[:30]:
        print(f"{value:12.0f}  {name}")
