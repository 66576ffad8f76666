import sys

from mmsearch.cli.main import main

sys.exit(main())
