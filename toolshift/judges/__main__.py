"""`python -m toolshift.judges score FILE`: judge a file of replies without the DAG
(toolshift.judges.scoring)."""

import sys

from toolshift.judges.scoring import main

sys.exit(main())
