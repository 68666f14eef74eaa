"""The evaluation protocol's roles: what each evaluation is allowed to see.

* ``validation``: the held-out works of the ``judge`` split and sampling seeds from ``seed``: for every choice
  (how many preference rounds, temperature, guidance, ...).
* ``test``: the held-out works of the ``judge_test`` split and seeds from ``TEST_SEED_BASE + seed``: only for the
  figures the README and the notebooks report, never for a choice.

Both sets of works are held out of training by ``data.splits`` (a hash of each work's key); the training pieces
are never a reference for a guard rail or a reported figure.

    role = ROLES["test"]
    role.seeds(16)                  # [1_000_000, ..., 1_000_015]
    held_out(shards, tok, role)     # the role's real pieces, decoded (Decoded)
"""

from __future__ import annotations

from dataclasses import dataclass

from tchaikovsky.data.splits import TEST_WORKS, VALIDATION_WORKS

TEST_SEED_BASE = 1_000_000  # test seeds start here: no validation range (seed + i, i < 10**6) can reach them


@dataclass(frozen=True)
class Role:
    """An evaluation role: its name, the held-out split whose works it may use, and where its seeds start."""

    name: str
    split: str
    seed_base: int

    def seeds(self, n: int, offset: int = 0) -> list[int]:
        """``n`` sampling seeds of this role (``offset`` separates several uses, e.g. prompts, within it)."""
        if offset < 0 or offset + n > TEST_SEED_BASE:
            raise ValueError(f"seed offset {offset} + {n} leaves the role's range of {TEST_SEED_BASE}")
        return list(range(self.seed_base + offset, self.seed_base + offset + n))


ROLES = {"validation": Role("validation", VALIDATION_WORKS, 0), "test": Role("test", TEST_WORKS, TEST_SEED_BASE)}


def role(name: str | Role) -> Role:
    """The role called ``name`` ("validation" or "test"); a clear error otherwise."""
    if isinstance(name, Role):
        return name
    if name not in ROLES:
        raise ValueError(f"evaluation role {name!r}: use 'validation' (for choices) or 'test' (for reported figures)")
    return ROLES[name]


def require_split(shards, r: Role) -> None:
    """Raise ValueError when the shards hold no pieces for role ``r``, saying how to make them."""
    if r.split not in shards.splits or not shards.pieces(r.split):
        raise ValueError(f"{shards.path} has no {r.split!r} split, the held-out works of the {r.name} role: build "
                         "the shards with judge_fraction > 0 (notebook 02 or 03; an older run must be rebuilt, since "
                         "held-out works are now chosen by a hash of each work)")
