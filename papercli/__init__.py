"""papercli: a registry of machine-learning papers, and recipes that reproduce their claims."""

__version__ = "0.1.0"
