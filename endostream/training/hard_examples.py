"""Online hard-example mining: training images drawn more often where the network still errs.

Each training image keeps a running score of how badly the K=0 mask fits it (1 - soft Dice of
the last times it was drawn). A share of each batch's picks follows those scores, the rest stay
uniform, so easy images are still revisited. An image not drawn yet scores 1.0 (the maximum): the
mined share explores every image once before it exploits. The table travels in the checkpoint so
a resumed run keeps what it learnt about the data.
"""

from __future__ import annotations

import numpy as np
import torch

from endostream.training.losses import soft_dice_error

UNSEEN = 1.0  # an image not drawn yet counts as the hardest there is
FLOOR = 0.02  # every image keeps a chance in the mined share, however well it is fitted


class HardnessTable:
    def __init__(self, n: int, share: float, decay: float = 0.5) -> None:
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"train.hard_mining must be within [0, 1], got {share}")
        self.share, self.decay = share, decay
        self.score = np.full(n, UNSEEN, np.float64)
        self.seen = np.zeros(n, bool)

    def pick(self, rng: np.random.Generator) -> int:
        """One training index: from the scores with probability ``share``, else uniform."""
        n = len(self.score)
        if self.share > 0 and rng.random() < self.share:
            p = self.score + FLOOR
            return int(rng.choice(n, p=p / p.sum()))
        return int(rng.integers(n))

    def update(self, indices: np.ndarray, hardness: np.ndarray) -> None:
        """Fold a batch's per-sample hardness in; index -1 (a negative clip) carries no score."""
        for i, h in zip(indices.tolist(), hardness.tolist()):
            if i >= 0:
                self.score[i] = self.decay * self.score[i] + (1 - self.decay) * h if self.seen[i] else h
                self.seen[i] = True

    def state_dict(self) -> dict:
        return {"score": self.score.copy(), "seen": self.seen.copy(), "share": self.share}

    def load_state_dict(self, state: dict) -> None:
        if len(state["score"]) != len(self.score):
            raise ValueError(f"the checkpoint's hardness table has {len(state['score'])} images, "
                             f"this training split {len(self.score)}: not the same data")
        self.score = np.asarray(state["score"], np.float64).copy()
        self.seen = np.asarray(state["seen"], bool).copy()


def sample_hardness(logits: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """1 - soft Dice per sample of (B,1,H,W) logits against {0,1} targets, in [0, 1]."""
    return soft_dice_error(logits.detach(), target).clamp(0, 1).float().cpu().numpy()
