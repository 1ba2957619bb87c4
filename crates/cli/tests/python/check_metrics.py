"""Reads a /metrics page with the official Prometheus text parser and checks samples.

Usage: check_metrics.py URL NAME{LABEL=VALUE}=N ... (labels optional; NAME>=N for at least N). Exits 0 when every check holds; prints what it found otherwise.
"""

import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

url, checks = sys.argv[1], sys.argv[2:]
text = urllib.request.urlopen(url, timeout=5).read().decode()
samples = {}
for family in text_string_to_metric_families(text):
    for sample in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
        samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value

failed = False
for check in checks:
    key, expected = check.rsplit("=", 1)
    at_least = key.endswith(">")
    key = key.rstrip(">")
    value = samples.get(key)
    ok = value is not None and (value >= float(expected) if at_least else value == float(expected))
    if not ok:
        failed = True
        print(f"FAIL {key}: expected {'>=' if at_least else ''}{expected}, got {value}", file=sys.stderr)
if failed:
    print(f"{len(samples)} samples parsed", file=sys.stderr)
    sys.exit(1)
print(f"ok: {len(checks)} checks over {len(samples)} samples")
