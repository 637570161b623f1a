"""`python -m portex_pay_devtools.fake_bot_api`: the local Telegram sandbox (see server.main)."""

import sys

from portex_pay_devtools.fake_bot_api.server import main

sys.exit(main())
