"""Training and evaluation: data, augmentation, losses, loop, validation, metrics, ``eval``.

May import model, runtime and inference; the runtime and the consumer never import this package."""
