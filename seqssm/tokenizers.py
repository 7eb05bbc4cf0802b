"""Tokenizers: nucleotides (A C G T N plus five specials) and raw bytes (token-free models).

Both turn text into int64 id arrays without a Python loop per character: a 256-entry lookup table is
applied to the ASCII/UTF-8 bytes in C (``bytes.translate``), then viewed as a numpy array. ``vocab_size``,
``pad_id`` and ``special_ids`` are what models and collate functions need; ``name`` is what a checkpoint's
``config.json`` stores so :func:`get_tokenizer` can rebuild the tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from seqssm.errors import InputError

_IUPAC_AMBIGUOUS = "RYSWKMBDHV"
# IUPAC complement pairs; S, W and N are their own complements. U (RNA) complements to A.
_COMPLEMENT = dict(zip("ACGTURYKMBVDHSWN", "TGCAAYRMKVBHDSWN", strict=True))
_INVALID = 255


def _as_int_array(ids, what: str) -> np.ndarray:
    """ids as a numpy integer array (a CPU copy for tensors), or InputError naming what was passed."""
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    arr = np.asarray(ids)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"{what}: expected integer token ids, got dtype {arr.dtype}; pass ids, not floats")
    return arr.astype(np.int64, copy=False)


def _check_range(ids: np.ndarray | torch.Tensor, vocab_size: int, what: str) -> None:
    if (ids.numel() if isinstance(ids, torch.Tensor) else ids.size) == 0:
        return
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= vocab_size:
        raise InputError(
            f"{what}: token ids must lie in [0, {vocab_size}), got range [{lo}, {hi}]; were these ids made "
            "by another tokenizer?"
        )


def _pad_batch(rows: list[np.ndarray], pad_id: int, pad_to: int | None) -> tuple[np.ndarray, np.ndarray]:
    longest = max((len(r) for r in rows), default=0)
    length = longest if pad_to is None else pad_to
    if longest > length:
        raise InputError(
            f"encode_batch: a sequence has {longest} tokens but pad_to={pad_to}; raise pad_to or cut the "
            "sequences first"
        )
    ids = np.full((len(rows), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), length), dtype=bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = True
    return ids, mask


class NucleotideTokenizer:
    """One token per base: pad 0, mask 1, cls/bos 2, sep/eos 3, unk 4, A 5, C 6, G 7, T 8, N 9.

    IUPAC ambiguity codes (R Y S W K M B D H V) become N, RNA's U becomes T, lowercase (soft-masked repeats)
    is accepted and can be reported with ``return_soft_mask``. Anything else is an error (or unk with
    ``errors="unk"``).
    """

    name = "nucleotide"
    pad_id, mask_id, bos_id, eos_id, unk_id = 0, 1, 2, 3, 4
    cls_id, sep_id = bos_id, eos_id
    a_id, c_id, g_id, t_id, n_id = 5, 6, 7, 8, 9
    vocab_size = 10
    special_ids = frozenset({pad_id, mask_id, bos_id, eos_id, unk_id})

    def __init__(self) -> None:
        table = np.full(256, _INVALID, dtype=np.uint8)
        for base, idx in zip("ACGTN", range(self.a_id, self.n_id + 1), strict=True):
            table[[ord(base), ord(base.lower())]] = idx
        for code in _IUPAC_AMBIGUOUS:
            table[[ord(code), ord(code.lower())]] = self.n_id
        table[[ord("U"), ord("u")]] = self.t_id
        self._encode_table = table.tobytes()
        self._unk_table = np.where(table == _INVALID, self.unk_id, table).astype(np.uint8).tobytes()

        # One character per id so a decoded string stays aligned with its ids when specials are kept.
        self._decode_table = b".#^$?ACGTN".ljust(256, b"\0")
        self._special_bytes = bytes(sorted(self.special_ids))

        complement = bytearray(256)  # 0 marks "not a nucleotide code"
        for base, comp in _COMPLEMENT.items():
            complement[ord(base)] = ord(comp)
            complement[ord(base.lower())] = ord(comp.lower())
        self._complement_bytes = bytes(complement)
        self._complement_ids = np.arange(self.vocab_size, dtype=np.int64)
        self._complement_ids[[self.a_id, self.c_id, self.g_id, self.t_id]] = [
            self.t_id, self.g_id, self.c_id, self.a_id,
        ]

    def __repr__(self) -> str:
        return "NucleotideTokenizer(vocab_size=10)"

    def _ascii(self, seq: str | bytes, source: str | None) -> bytes:
        if isinstance(seq, (bytes, bytearray, memoryview)):
            return bytes(seq)
        if not isinstance(seq, str):
            raise InputError(f"expected a DNA string, got {type(seq).__name__}{_where(source)}")
        try:
            return seq.encode("ascii")
        except UnicodeEncodeError as err:
            char = seq[err.start]
            # Files are read with errors="surrogateescape": an undecodable byte b arrives as U+DC00 + b.
            shown = f"byte 0x{ord(char) - 0xDC00:02x}" if "\udc80" <= char <= "\udcff" else f"character {char!r}"
            raise InputError(
                f"non-ASCII {shown} at position {err.start}{_where(source)}; DNA must be IUPAC letters (ACGTN, "
                "RYSWKMBDHV, U), upper or lower case: replace or remove it"
            ) from None

    def encode_codes(
        self, seq: str | bytes, errors: str = "strict", source: str | None = None
    ) -> np.ndarray:
        """Token ids as uint8 [L] (no specials): the compact form for holding whole genomes in memory."""
        return self._codes(self._ascii(seq, source), errors, source)

    def _codes(self, raw: bytes, errors: str, source: str | None) -> np.ndarray:
        if errors not in ("strict", "unk"):
            raise InputError(f"errors={errors!r}: use 'strict' (raise) or 'unk' (map to the unk token)")
        if errors == "unk":
            return np.frombuffer(raw.translate(self._unk_table), dtype=np.uint8)
        codes = np.frombuffer(raw.translate(self._encode_table), dtype=np.uint8)
        if codes.size and codes.max() == _INVALID:
            pos = int(np.flatnonzero(codes == _INVALID)[0])
            raise InputError(
                f"invalid character {chr(raw[pos])!r} at position {pos}{_where(source)}; DNA must be IUPAC "
                "letters (ACGTN, RYSWKMBDHV, U), upper or lower case: replace (e.g. by N) or remove it"
            )
        return codes

    def encode(
        self,
        seq: str | bytes,
        add_special_tokens: bool = False,
        return_soft_mask: bool = False,
        errors: str = "strict",
        source: str | None = None,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Token ids int64 [L] (bos ... eos, [L + 2], with ``add_special_tokens``).

        ``return_soft_mask`` also returns a bool array of the same length, True where the input was
        lowercase (False at bos/eos). ``errors="strict"`` raises InputError naming the first character
        that is not an IUPAC code, its 0-based position and ``source`` (e.g. a record name);
        ``errors="unk"`` maps such characters to ``unk_id``.
        """
        raw = self._ascii(seq, source)
        ids = self._codes(raw, errors, source).astype(np.int64)
        if add_special_tokens:
            ids = np.concatenate(([self.bos_id], ids, [self.eos_id]))
        if not return_soft_mask:
            return ids
        soft = np.frombuffer(raw, dtype=np.uint8) >= ord("a")
        if add_special_tokens:
            soft = np.concatenate(([False], soft, [False]))
        return ids, soft

    def encode_batch(
        self,
        seqs: Sequence[str | bytes],
        pad_to: int | None = None,
        add_special_tokens: bool = False,
        errors: str = "strict",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Right-padded ids int64 [B, L] and attention mask bool [B, L] (True on real tokens).

        L is the longest sequence, or ``pad_to`` (an error if a sequence is longer). Errors name the
        sequence's index in the batch.
        """
        rows = [
            self.encode(s, add_special_tokens=add_special_tokens, errors=errors, source=f"sequence {i}")
            for i, s in enumerate(seqs)
        ]
        return _pad_batch(rows, self.pad_id, pad_to)

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """ids [L] (list, np.ndarray or torch.Tensor) → bases; N stays N.

        Special tokens are dropped, or with ``skip_special_tokens=False`` shown as one character each so
        the string stays aligned with the ids: pad '.', mask '#', bos/cls '^', eos/sep '$', unk '?'.
        """
        arr = _as_int_array(ids, "decode").reshape(-1)
        _check_range(arr, self.vocab_size, "decode")
        delete = self._special_bytes if skip_special_tokens else b""
        return arr.astype(np.uint8).tobytes().translate(self._decode_table, delete).decode("ascii")

    def reverse_complement(self, x: str | np.ndarray | torch.Tensor):
        """Reverse complement of a DNA string or of token ids [..., L], returned as the same type.

        Strings: IUPAC-aware (A↔T, C↔G, R↔Y, K↔M, B↔V, D↔H; S, W, N unchanged; U → A), case kept.
        Ids (np.ndarray or torch.Tensor, any integer dtype and device): reversed along the last axis,
        A↔T and C↔G swapped, N and special tokens unchanged. The whole last axis is reversed, so a
        right-padded batch comes back left-padded (bos/eos swap ends too).
        """
        if isinstance(x, str):
            raw = self._ascii(x, None)
            comp = raw.translate(self._complement_bytes)
            if 0 in comp:
                pos = comp.index(0)
                raise InputError(
                    f"reverse_complement: invalid character {x[pos]!r} at position {pos}; DNA must be IUPAC "
                    "letters"
                )
            return comp[::-1].decode("ascii")
        what = "reverse_complement"
        if isinstance(x, torch.Tensor):
            if x.dtype.is_floating_point or x.is_complex() or x.dtype == torch.bool or x.dim() == 0:
                raise InputError(f"{what}: expected integer ids [..., L], got {x.dtype} {tuple(x.shape)}")
            if x.device.type == "cpu":  # numpy's table lookup is several times faster than torch indexing
                return torch.from_numpy(self.reverse_complement(x.detach().numpy()))
            _check_range(x, self.vocab_size, what)
            table = torch.as_tensor(self._complement_ids, device=x.device)
            return table[x.flip(-1).long()].to(x.dtype)
        if isinstance(x, np.ndarray):
            if not np.issubdtype(x.dtype, np.integer) or x.ndim == 0:
                raise InputError(f"{what}: expected integer ids [..., L], got {x.dtype} {x.shape}")
            _check_range(x, self.vocab_size, what)
            return self._complement_ids.astype(x.dtype)[x[..., ::-1]]
        raise InputError(
            f"reverse_complement: expected a str, np.ndarray or torch.Tensor, got {type(x).__name__}"
        )


class ByteTokenizer:
    """Token-free: ids 0–255 are the UTF-8 bytes, then pad 256, mask 257, bos 258, eos 259 (vocab 260)."""

    name = "byte"
    pad_id, mask_id, bos_id, eos_id = 256, 257, 258, 259
    vocab_size = 260
    special_ids = frozenset({pad_id, mask_id, bos_id, eos_id})

    def __repr__(self) -> str:
        return "ByteTokenizer(vocab_size=260)"

    def encode(self, text: str | bytes, add_special_tokens: bool = False, source: str | None = None) -> np.ndarray:
        """Byte ids int64 [L] of ``text`` (str is UTF-8 encoded); bos ... eos with ``add_special_tokens``.

        ``source`` (e.g. a record name) is named in errors, as by :meth:`NucleotideTokenizer.encode`.
        """
        if isinstance(text, str):
            try:
                raw = text.encode("utf-8")
            except UnicodeEncodeError as err:
                raise InputError(
                    f"ByteTokenizer.encode: character {text[err.start]!r} at position {err.start}{_where(source)} "
                    "cannot be UTF-8 encoded (a lone surrogate: an undecodable byte of a file); fix the file's "
                    "encoding, or pass bytes"
                ) from None
        elif isinstance(text, (bytes, bytearray, memoryview)):
            raw = bytes(text)
        else:
            raise InputError(f"ByteTokenizer.encode: expected str or bytes, got {type(text).__name__}")
        ids = np.frombuffer(raw, dtype=np.uint8).astype(np.int64)
        if add_special_tokens:
            ids = np.concatenate(([self.bos_id], ids, [self.eos_id]))
        return ids

    def encode_batch(
        self, texts: Sequence[str | bytes], pad_to: int | None = None, add_special_tokens: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Right-padded ids int64 [B, L] and attention mask bool [B, L] (True on real tokens)."""
        rows = [self.encode(t, add_special_tokens=add_special_tokens) for t in texts]
        return _pad_batch(rows, self.pad_id, pad_to)

    def decode_bytes(self, ids) -> bytes:
        """ids [L] → the bytes they stand for; special tokens are dropped."""
        arr = _as_int_array(ids, "decode").reshape(-1)
        _check_range(arr, self.vocab_size, "decode")
        return arr[arr < 256].astype(np.uint8).tobytes()

    def decode(self, ids) -> str:
        """ids [L] → text (UTF-8; invalid byte sequences, e.g. a cut multi-byte character, become U+FFFD)."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


def get_tokenizer(name: str):
    """The tokenizer a checkpoint's config names: "nucleotide", "byte", or an audio one ("mulaw8", "linear8")."""
    from seqssm.transforms import AudioTokenizer

    choices = {"nucleotide": NucleotideTokenizer, "byte": ByteTokenizer}
    if name in choices:
        return choices[name]()
    if name.startswith(("mulaw", "linear")):
        return AudioTokenizer.from_name(name)
    if name == "external":
        raise InputError("this checkpoint was converted from Hugging Face or mamba_ssm weights and carries "
                         "their text tokenizer, which seqssm does not ship; use it through the Python API "
                         "with token ids (model(input_ids), model.prefill / model.step)")
    raise InputError(f"unknown tokenizer {name!r}; choose one of byte, nucleotide, linear8, mulaw8")


def _where(source: str | None) -> str:
    return f" in {source}" if source else ""
