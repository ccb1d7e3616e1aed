"""walletwatch: watch custodial wallet and payment-gateway accounts for Prometheus."""

__version__ = "0.1.0.dev0"
