"""What every suite shares: errors, device choice, atomic writes, progress, logging.

Kept small on purpose: a suite may import `atelier.core`, never another suite.
"""

from atelier.core.errors import AtelierError

__all__ = ["AtelierError"]
