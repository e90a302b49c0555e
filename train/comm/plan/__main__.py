import sys

from train.comm.plan.cli import main

sys.exit(main())
