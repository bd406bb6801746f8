import sys

from dnsflow.cli import main

sys.exit(main())
