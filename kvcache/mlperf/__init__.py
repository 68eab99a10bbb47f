"""`kvcache mlperf run | check`: the MLPerf Storage KV-cache submission path (rules, trials, results tree, verdict)."""
