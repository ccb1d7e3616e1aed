"""walletwatch status: against a fake operator API on loopback, and against a real daemon."""
