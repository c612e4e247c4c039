"""Compression stages, one module per method; each registers itself on import (see ``base.Stage``)."""
