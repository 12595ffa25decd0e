"""`make bench`: speed and memory targets measured as ratios in one run (results/bench/), and the study's
cost estimate."""
