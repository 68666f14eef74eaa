"""Pre-tokenized corpus on disk, and the batches training and evaluation read from it.

``build_shards`` splits pieces into train / val (/ test) BY PIECE (and held-out splits by work: ``data.splits``),
tokenizes them in parallel (resumably: one cached ``.npy`` per piece), and writes one flat token array per split
(``train.bin``, ``val.bin``...) plus ``index.json``. Each piece is stored as ``[BOS ... EOS]`` (after its condition
tokens, in a conditioned run) and pieces are concatenated, so a window may span the end of one piece and the start
of the next, exactly like documents in nanoGPT's ``train.bin``.

``Shards`` memory-maps the arrays. ``batch`` draws windows at offsets that are a pure function of
``(seed, step, row)``: resuming at step k reproduces the batches of an uninterrupted run, and each of several
processes reads only its own rows. ``eval_batches`` tiles a split exactly once, for an exact held-out loss.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
from symusic import Score

from tchaikovsky import io, progress
from tchaikovsky.data import fim
from tchaikovsky.data.augment import Augment, OutOfRange, apply_variant
from tchaikovsky.data.conditions import Conditions
from tchaikovsky.data.splits import HASH_RULE, assign_splits
from tchaikovsky.data.tokenizer import encode_with_notes, load_tokenizer, save_tokenizer, special_ids, tokenizer_hash

INDEX_FILE = "index.json"
MIN_TOKENS = 3  # [BOS, EOS] alone is an empty piece
AUTO_POOL_MIN_BYTES = 2_000_000  # workers=None: below this much MIDI, one process is faster


def _piece_dict(piece: Any) -> dict:
    if hasattr(piece, "to_dict"):
        return dict(piece.to_dict())
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(piece).items() if k != "path"}


def _cache_key(rel_path: str, tok_hash: str, variant=None) -> str:
    tag = "" if not variant else f"\0{variant}"
    return hashlib.sha256(f"{rel_path}\0{tok_hash}{tag}".encode()).hexdigest()[:24]


def _content_hash(npy: Path) -> str:
    """A piece's content hash: its music token ids (no condition tokens) under the run's tokenizer, so a copy of a
    piece under another name or in another folder hashes alike."""
    return hashlib.sha256(np.load(npy).astype(np.int64).tobytes()).hexdigest()[:20]


def _encode_to_cache(tok, jobs: Sequence[tuple], cache: Path) -> list[tuple[str, dict]]:
    """Encode (key, file[, variant]) jobs and write ``key.npy`` (ids) then ``key.json`` (meta; presence = done)."""
    results = []
    for key, file, *variant in jobs:
        try:
            score = apply_variant(Score(file), variant[0] if variant else None)
            ids, n_notes = encode_with_notes(tok, score)
            meta = {"n_tokens": int(len(ids)), "n_notes": n_notes}
            if n_notes == 0 or len(ids) < MIN_TOKENS:  # an empty score still yields Bar/TimeSig/Tempo tokens
                meta = {"error": f"too short: {n_notes} notes, {len(ids)} tokens"}
            else:
                io.atomic_write(cache / f"{key}.npy", lambda f: np.save(f, ids))
        except OutOfRange as e:
            meta = {"error": str(e), "augment": True}
        except Exception as e:  # noqa: BLE001 - a bad file is recorded and skipped, never fatal
            meta = {"error": f"{type(e).__name__}: {e}"[:500]}
        io.atomic_write(cache / f"{key}.json", lambda f: f.write(json.dumps(meta).encode()))
        results.append((key, meta))
    return results


def _worker(tok_path: str, jobs: Sequence[tuple[str, str]], cache: str) -> list[tuple[str, dict]]:
    """Process-pool entry point: one tokenizer load per chunk of files."""
    return _encode_to_cache(load_tokenizer(tok_path), jobs, Path(cache))


def _tokenize(tok, tok_path: Path, jobs: list[tuple[str, str]], cache: Path, workers: int) -> None:
    """Encode ``jobs`` into the cache: a spawn process pool for many jobs, in-process otherwise.

    Spawn, not fork: the notebook process usually runs JAX's threads, and forking those can deadlock. Spawn
    re-imports a script's ``__main__``, so scripts need the ``if __name__ == "__main__":`` guard; if the pool
    breaks anyway, the remaining pieces are encoded in-process (slower, never wrong).
    """
    bar = progress.bar(total=len(jobs), desc="tokenizing", unit="piece")
    if workers > 1 and len(jobs) >= 2 * workers:
        size = max(1, min(32, len(jobs) // (4 * workers)))
        chunks = [jobs[i : i + size] for i in range(0, len(jobs), size)]
        try:
            with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = [pool.submit(_worker, str(tok_path), c, str(cache)) for c in chunks]
                for fut in as_completed(futures):
                    bar.update(len(fut.result()))
        except BrokenProcessPool:
            warnings.warn("tokenizer process pool broke (missing `if __name__ == '__main__':` guard?); "
                          "encoding the remaining pieces in this process", stacklevel=3)
        jobs = [job for job in jobs if not (cache / f"{job[0]}.json").is_file()]
    for job in jobs:
        _encode_to_cache(tok, [job], cache)
        bar.update(1)
    bar.close()


def _auto_workers(jobs: Sequence[tuple[str, str]]) -> int:
    """All cores, unless the job is too small to pay for spawning them (~1 s each, vs ~1.5 MB of MIDI per s)."""
    size = sum(os.path.getsize(job[1]) for job in jobs if os.path.isfile(job[1]))
    return (os.cpu_count() or 1) if size >= AUTO_POOL_MIN_BYTES else 1


def _write_split(out: Path, name: str, ps, keys: dict, extra: dict, variants, conditions, dtype):
    """One split's ``<name>.bin`` (each kept piece as its condition ids then its cached token ids; the training
    split also gets every augmented variant) -> (index entries, total tokens, skipped pieces with reasons)."""
    cache = out / "pieces"
    metas = [(p, keys[p.rel_path], json.loads((cache / f"{keys[p.rel_path]}.json").read_text()), None) for p in ps]
    skipped = [{"path": p.rel_path, "reason": m["error"]} for p, _, m, _ in metas if "error" in m]
    bad = {p.rel_path for p, _, m, _ in metas if "error" in m}
    if name == "train":
        metas += [(p, extra[(p.rel_path, v)], json.loads((cache / f"{extra[(p.rel_path, v)]}.json").read_text()), v)
                  for p in ps if p.rel_path not in bad for v in variants]
    kept = [(p, key, m, v) for p, key, m, v in metas if "error" not in m]
    prefixes = [conditions.encode(p) if conditions else [] for p, _, _, _ in kept]
    offsets = np.cumsum([0] + [m["n_tokens"] + len(c) for (_, _, m, _), c in zip(kept, prefixes)]).tolist()
    entries = [{**_piece_dict(p), "offset": o, "length": m["n_tokens"] + len(c), "n_notes": m["n_notes"],
                **({"conditions": c} if c else {}),
                **({"augment": list(v)} if v else {"content": _content_hash(cache / f"{key}.npy")})}
               for (p, key, m, v), o, c in zip(kept, offsets, prefixes)]

    def write(f):  # streamed piece by piece: a split never has to fit in memory
        for (_, key, _, _), c in zip(kept, prefixes):
            f.write(np.asarray(c, dtype).tobytes() + np.load(cache / f"{key}.npy").astype(dtype).tobytes())

    io.atomic_write(out / f"{name}.bin", write)
    return entries, offsets[-1], skipped


def build_shards(
    tok,
    pieces: Sequence[Any],
    out_dir: str | Path,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    workers: int | None = None,
    augment: Augment | None = None,
    conditions: Conditions | None = None,
    held_out: dict[str, float] | None = None,
    data_spec: dict | None = None,
) -> Path:
    """Tokenize ``pieces`` into ``out_dir/{split}.bin`` + ``index.json`` (+ ``tokenizer.json``); return ``out_dir``.

    Splits come from ``assign_splits`` (by piece; the dataset's own split wins). Resumable: per-piece ids (and
    failures) are cached under ``out_dir/pieces`` keyed by rel_path + tokenizer hash, so a rerun only encodes what
    is missing (a changed file under the same rel_path is NOT re-encoded: delete its cache entry or the directory).
    ``index.json["stats"]`` says how many pieces were encoded vs cached. Pieces that fail to load, or have no notes,
    are listed in ``index.json["skipped"]`` with the reason. ``workers=None``: all cores when there is enough MIDI
    to repay starting them, else in-process; an explicit ``workers > 1`` always uses a process pool.

    ``conditions``: every piece is stored as ``[its condition ids..., BOS, ..., EOS]`` (``data.conditions``), the
    vocabulary is written beside the tokenizer (``conditions.json``) and into the index. ``held_out``: splits of
    whole works set aside from training and validation (``assign_splits``: a stable function of each work's key),
    tokenized like the others. Every original piece's entry carries ``content``, a hash of its music token ids, so
    a fine-tune can tell which of its held-out pieces a parent run trained on (``splits.held_out_overlap``).
    ``data_spec``: how the pieces were chosen and split (``data.spec.DataSpec.to_dict()``), kept in the index.
    """
    out = Path(out_dir)
    cache = out / "pieces"
    cache.mkdir(parents=True, exist_ok=True)
    tok_path = save_tokenizer(tok, out / "tokenizer.json")
    tok_hash = tokenizer_hash(tok)
    splits = assign_splits(pieces, val_fraction, seed, held_out)
    if conditions is not None:
        if conditions.base != len(tok):
            raise ValueError(f"conditions made for a vocabulary of {conditions.base} ids, the tokenizer has {len(tok)}")
        conditions.save(out / "conditions.json")

    keys = {p.rel_path: _cache_key(p.rel_path, tok_hash) for ps in splits.values() for p in ps}
    variants = augment.variants() if augment else []
    extra = {(p.rel_path, v): _cache_key(p.rel_path, tok_hash, v) for p in splits.get("train", []) for v in variants}
    paths = {p.rel_path: str(p.path) for ps in splits.values() for p in ps}
    jobs = [(k, paths[r]) for r, k in keys.items()] + [(k, paths[r], v) for (r, v), k in extra.items()]
    todo = [job for job in jobs if not (cache / f"{job[0]}.json").is_file()]
    _tokenize(tok, tok_path, todo, cache, workers or _auto_workers(todo))

    dtype = np.uint16 if (conditions.vocab_size if conditions else len(tok)) <= 2**16 else np.uint32
    index: dict[str, Any] = {
        "tokenizer_hash": tok_hash, "vocab_size": conditions.vocab_size if conditions else len(tok),
        "dtype": np.dtype(dtype).name, "seed": seed, "val_fraction": val_fraction, "special_ids": special_ids(tok), "splits": {}, "skipped": [],
        "stats": {"pieces": len(keys), "encoded": len(todo), "cached": len(jobs) - len(todo),
                  "augmented_copies": len(extra)},
        "augment": dataclasses.asdict(augment) if augment else None,
        "conditions": conditions.to_dict() if conditions else None, "held_out": held_out or {},
        "held_out_rule": HASH_RULE, "data_spec": data_spec,
    }
    for name, ps in splits.items():
        entries, n_tokens, skipped = _write_split(out, name, ps, keys, extra, variants, conditions, dtype)
        index["skipped"] += skipped
        index["splits"][name] = {"n_tokens": n_tokens, "pieces": entries}
    io.atomic_write(out / INDEX_FILE, lambda f: f.write(json.dumps(index, indent=1).encode()))
    return out


class Shards:
    """Read-only view of a ``build_shards`` directory: memory-mapped token arrays + the index."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        index_path = self.path / INDEX_FILE
        if not index_path.is_file():
            raise FileNotFoundError(f"no {INDEX_FILE} in {self.path}: build it with build_shards(tok, pieces, dir)")
        self.index: dict = json.loads(index_path.read_text())
        self.vocab_size: int = self.index["vocab_size"]
        self.tokenizer_hash: str = self.index["tokenizer_hash"]
        self.pad_id: int = self.index.get("special_ids", {}).get("pad", 0)
        cond = self.index.get("conditions")
        self.conditions: Conditions | None = Conditions.from_dict(cond) if cond else None
        self._offsets: dict[str, np.ndarray] = {}
        dtype = np.dtype(self.index["dtype"])
        self._data: dict[str, np.ndarray] = {}
        for name, split in self.index["splits"].items():
            file, n = self.path / f"{name}.bin", split["n_tokens"]
            if not file.is_file() or file.stat().st_size != n * dtype.itemsize:
                raise ValueError(f"{file} is missing or does not hold {n} {dtype} tokens: rebuild the shards")
            self._data[name] = np.memmap(file, dtype=dtype, mode="r", shape=(n,)) if n else np.zeros(0, dtype)

    @property
    def splits(self) -> list[str]:
        return list(self._data)

    def _split(self, split: str) -> np.ndarray:
        if split not in self._data:
            raise KeyError(f"no split {split!r} in {self.path} (have {self.splits})")
        return self._data[split]

    def n_tokens(self, split: str = "train") -> int:
        return len(self._split(split))

    def pieces(self, split: str = "train") -> list[dict]:
        self._split(split)
        return self.index["splits"][split]["pieces"]

    def piece_ids(self, split: str, i: int) -> np.ndarray:
        """Token ids of the i-th piece of a split, ``[BOS ... EOS]``, int32."""
        p = self.pieces(split)[i]
        return np.asarray(self._split(split)[p["offset"] : p["offset"] + p["length"]], dtype=np.int32)

    def n_notes(self, split: str = "val") -> int | None:
        """Total notes in a split (for bits per note); None if the index does not record them."""
        counts = [p.get("n_notes") for p in self.pieces(split)]
        return None if any(c is None for c in counts) else int(sum(counts))

    def batch(self, step: int, batch_size: int, seq_len: int, *, seed: int = 0, split: str = "train",
              process_index: int = 0, process_count: int = 1, condition_dropout: float = 0.0,
              unconditional_rate: float = 0.0, fim_rate: float = 0.0, fim_spm: float = 0.0, fill=None) -> np.ndarray:
        """This process's rows of the global batch for ``step``: int32 ``(batch_size // process_count, seq_len + 1)``.

        All ``batch_size`` window starts come from ``default_rng([seed, step])``, uniform over every start whose
        window fits in the split; process ``i`` takes rows ``[i*b, (i+1)*b)``. Inputs are ``[:, :-1]``, targets
        ``[:, 1:]``. If the split is shorter than ``seq_len + 1`` every row is the whole split, right-padded with PAD.
        In conditioned shards every window opens with its piece's condition tokens: a window starting inside a
        piece holds them, then the piece from that point on (a piece longer than the window is learned with its
        conditions in view throughout, as the sampler keeps them in view: ``generate``); one starting within
        the conditions starts at the piece's beginning instead.
        ``condition_dropout``: each condition token of the global batch is replaced by its kind's ``unknown`` token
        with this probability (drawn from ``default_rng([seed, step, 1])``, so resuming reproduces it too).
        ``unconditional_rate``: that share of the rows (``default_rng([seed, step, 3])``) has every condition token
        replaced so: the all-"unknown" request that guidance subtracts (``p ** kinds`` of rows by dropout alone).
        ``fim_rate``: that share of the rows (``data.fim.draws``, cuts included) is reordered for fill-in-the-middle
        with the model's sentinels ``fill``, a share ``fim_spm`` of them in SPM order (``fim.fim_rows``); eval
        batches never are.
        """
        if batch_size % process_count:
            raise ValueError(f"batch_size={batch_size} is not divisible by process_count={process_count}")
        data, width = self._split(split), seq_len + 1
        if len(data) == 0:
            raise ValueError(f"split {split!r} of {self.path} is empty")
        rows = batch_size // process_count
        starts = np.random.default_rng([seed, step]).integers(0, max(len(data) - width, 0) + 1, size=batch_size)
        out = np.full((rows, width), self.pad_id, dtype=np.int32)
        for r, s in enumerate(starts[process_index * rows : (process_index + 1) * rows]):
            prefix, s = self._pinned(split, int(s))
            window = data[s : s + width - len(prefix)]
            out[r, : len(prefix)] = prefix
            out[r, len(prefix) : len(prefix) + len(window)] = window
        if fim_rate:
            out = fim.fim_rows(out, fim.draws(seed, step, batch_size)[process_index * rows :][:rows], fim_rate,
                               fill=fill, opens_bar=self.opens_bar, eos=self.index["special_ids"]["eos"],
                               conditions=self.conditions, spm=fim_spm)
        if (condition_dropout > 0 or unconditional_rate > 0) and self.conditions is not None:
            drop = np.random.default_rng([seed, step, 1]).random((batch_size, width)) < condition_dropout
            whole = np.random.default_rng([seed, step, 3]).random(batch_size) < unconditional_rate
            drop = (drop | whole[:, None])[process_index * rows : (process_index + 1) * rows]
            drop &= self.conditions.is_condition(out)
            out[drop] = self.conditions.dropout_targets()[out[drop]]
        return out

    @functools.cached_property
    def opens_bar(self) -> np.ndarray:
        """(vocab_size,) bool: the ids that open a bar (``data.fim.opens_bar`` of the shards' ``tokenizer.json``)."""
        return fim.opens_bar(load_tokenizer(self.path / "tokenizer.json"), self.vocab_size)

    def _piece_offsets(self, split: str) -> np.ndarray:
        """Where each piece of a split starts (computed once per split)."""
        if split not in self._offsets:
            self._offsets[split] = np.asarray([p["offset"] for p in self.pieces(split)], np.int64)
        return self._offsets[split]

    def _pinned(self, split: str, start: int) -> tuple[list[int], int]:
        """(condition tokens to put first, where the data of the window starts) for a window starting at ``start``:
        no tokens without conditions or at a piece's beginning; within a piece's condition tokens, its beginning."""
        if self.conditions is None:
            return [], start
        pieces, offsets = self.pieces(split), self._piece_offsets(split)
        j = int(np.searchsorted(offsets, start, side="right")) - 1
        cond = pieces[j].get("conditions", []) if j >= 0 else []
        if start - int(offsets[max(j, 0)]) <= len(cond):
            return [], int(offsets[max(j, 0)]) if j >= 0 else start
        return list(cond), start

    def _eval_windows(self, seq_len: int, split: str) -> list[tuple[int, int, int]]:
        """(start, end, pinned) per evaluation window of a conditioned split: each piece on its own, its first
        window from its beginning, the next ones its conditions then the next ``seq_len - P`` targets."""
        out = []
        for p in self.pieces(split):
            o, n, P = p["offset"], p["length"], len(p.get("conditions", []))
            out.append((o, o + min(n, seq_len + 1), 0))
            k = o + seq_len  # the last token of a window is the first of the next (its target was counted)
            while k < o + n - 1:
                out.append((k, min(k + seq_len + 1 - P, o + n), P))
                k += seq_len - P
        return out

    def n_eval_batches(self, batch_size: int, seq_len: int, *, split: str = "val") -> int:
        """How many batches ``eval_batches`` yields (for progress bars and averaging)."""
        if self.conditions is not None:
            n_windows = len(self._eval_windows(seq_len, split))
        else:
            n_windows = -(-max(self.n_tokens(split) - 1, 0) // seq_len)
        return -(-n_windows // batch_size)

    def eval_batches(
        self, batch_size: int, seq_len: int, *, split: str = "val"
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every target position of a split exactly once: ``(tokens int32 (B, T+1), mask float32 (B, T))``.

        Window k holds tokens ``[k*T, k*T + T]`` (stride T, one token of overlap for the shifted targets), so targets
        1..n-1 are each predicted once, with as much left context as the window allows. The tail is padded with
        PAD and whole PAD rows, mask 0, so every batch has the same shape (one jit trace) and
        ``sum(mask) == n_tokens - 1``, less the condition tokens, which are given, not predicted (mask 0 as targets).
        """
        data, T = self._split(split), seq_len
        if self.conditions is not None:
            yield from self._eval_batches_pinned(batch_size, seq_len, split)
            return
        for b in range(self.n_eval_batches(batch_size, seq_len, split=split)):
            tokens = np.full((batch_size, T + 1), self.pad_id, dtype=np.int32)
            mask = np.zeros((batch_size, T), dtype=np.float32)
            for r in range(batch_size):
                start = (b * batch_size + r) * T
                window = data[start : start + T + 1]
                if len(window) >= 2:
                    tokens[r, : len(window)] = window
                    mask[r, : len(window) - 1] = 1.0
            yield tokens, mask

    def _eval_batches_pinned(self, batch_size: int, T: int, split: str):
        """``eval_batches`` of a conditioned split: windows as ``_eval_windows`` (each piece's targets once, with
        its conditions in view, as in training); condition tokens are never targets."""
        data, windows = self._split(split), self._eval_windows(T, split)
        for b in range(0, len(windows), batch_size):
            tokens = np.full((batch_size, T + 1), self.pad_id, dtype=np.int32)
            mask = np.zeros((batch_size, T), dtype=np.float32)
            for r, (a, e, P) in enumerate(windows[b : b + batch_size]):
                piece = data[a:e]
                if P:
                    j = int(np.searchsorted(self._piece_offsets(split), a, side="right")) - 1
                    tokens[r, :P] = self.pieces(split)[j]["conditions"]
                tokens[r, P : P + len(piece)] = piece
                mask[r, P : P + len(piece) - 1] = 1.0  # targets after the first data token (already counted)
            mask[self.conditions.is_condition(tokens[:, 1:])] = 0.0
            yield tokens, mask
