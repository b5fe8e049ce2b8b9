"""Sub-commands of `perfpredict`: one module each, exposing ``register(subparsers)``."""
