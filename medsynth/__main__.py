import sys

from medsynth.cli import main

sys.exit(main())
