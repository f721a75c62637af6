"""One module per search parameter type (R4 §3.1.1.4): how values are indexed, and how a search
value becomes a condition on that type's index table. Each module exports ``extract`` and
``condition``."""
