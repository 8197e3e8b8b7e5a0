"""dynoclock: a clock process for PaaS apps that runs every scheduled slot exactly once."""

__version__ = "0.1.0"
