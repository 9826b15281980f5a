"""Benchmarks, run from the repository root (see each module's docstring):

    python -m benchmarks                 # performance suite: training, sampling, NLL evaluation (+ --quick)
    python -m benchmarks.optimisations   # A/B experiments: channels_last, compile, threads, batch size, ...
    python -m benchmarks.samplers RUN... # sample quality against network evaluations, on trained runs

Results go to benchmarks/results/*.json; the suites print Markdown for benchmarks/RESULTS.md.
"""
