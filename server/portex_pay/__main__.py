"""`python -m portex_pay` is the `portex-pay` command."""

from portex_pay.cli import main

raise SystemExit(main())
