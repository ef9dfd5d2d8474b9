"""``python -m wsplugin.client URL``: the chat client (see :mod:`wsplugin.cli`)."""

import sys

from wsplugin.cli import main

sys.exit(main())
