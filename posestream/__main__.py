import sys

from posestream.cli import main

sys.exit(main())
