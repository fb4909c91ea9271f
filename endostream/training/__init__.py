"""Training only: data, augmentation, losses, loop. The runtime never imports this package."""
