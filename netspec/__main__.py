"""`python -m netspec`, the form torchrun starts: `torchrun --nproc-per-node 2 -m netspec train spec.net`."""

import sys

from netspec.cli import main

sys.exit(main())
