"""bru-lab: does one activation function really beat another?

Layers (each imports only those below it; see docs/architecture.md):
activations, data, settings -> initialisation, models -> training -> bench, plots -> cli.
"""

__version__ = "0.1.0"
