"""The levels every interval, test and power figure is quoted at."""

CONFIDENCE = 0.95
ALPHA = 0.05
POWER = 0.80  # the power a minimum detectable difference is quoted at
TESTS = ("wilcoxon", "t")  # what a spec's compare.test may name
