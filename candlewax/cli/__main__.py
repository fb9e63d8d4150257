import sys

from candlewax.cli import main

sys.exit(main())
