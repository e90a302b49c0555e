import sys

from train.comm.sweep.cli import main

sys.exit(main())
