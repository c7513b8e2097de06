"""HEAR downstream evaluation: embeddings cache, probes, metrics, scores and report.

embeddings.py  HEAR API models -> cached embeddings in the hear-eval-kit layout
probes.py      the HEAR MLP grid trained at once (vectorized), linear grid, kNN
metrics.py     scene metrics;  events.py  event post-processing and event/segment metrics
protocol.py    one task: folds, selection on validation, test scores
scores.py      normalization and categories;  report.py  results.json, report.md, plots
logmel.py      the built-in log-mel baseline (a HEAR API module);  cli.py  `audiorep evaluate`
"""
