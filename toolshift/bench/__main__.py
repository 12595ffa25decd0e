"""`python -m toolshift.bench` (`make bench`): see toolshift.bench.suite."""

import sys

from toolshift.bench.suite import main

sys.exit(main())
