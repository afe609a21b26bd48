"""The attention lab (step 6): train one small GPT per attention variant and compare them honestly.

variants.py   "score=…;mask=…;pos=…" strings and the built-in grids
leakage.py    the honest loss: each position scored with the future hidden
results.py    results.csv, results.md, curves.png, samples.md from finished runs
run.py        run_lab (train, evaluate, resume) and report_lab (rebuild the files)
"""
