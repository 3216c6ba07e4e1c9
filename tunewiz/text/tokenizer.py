"""One tokenizer interface over the two formats Llama-family checkpoints ship.

* ``tokenizer.json`` (preferred when present): the ``tokenizers`` library, as transformers uses it.
* ``tokenizer.model`` (SentencePiece, Llama 1/2 and Mistral without a tokenizer.json): the
  ``sentencepiece`` library, made to behave like transformers' non-legacy Llama tokenizer: special
  token strings in the text map to their ids, and no dummy-prefix space is added to text that follows
  a special token or already starts with a space.

Special tokens come from ``tokenizer_config.json`` (then ``special_tokens_map.json``), and ids from
``generation_config.json`` / ``config.json`` fill in what they leave out, as transformers does.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from functools import cached_property
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunewiz.errors import TunewizError
from tunewiz.text.templates import ChatTemplate, load_model_template

if TYPE_CHECKING:
    import numpy as np

# Files that make up a tokenizer; save_pretrained copies the ones the source directory has.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)
# End-of-turn tokens of the common chat templates; generation stops on them as on eos.
END_OF_TURN_TOKENS = ("<|eot_id|>", "<|im_end|>", "</s>", "<|end|>", "<end_of_turn>", "<|eom_id|>")
_NAMED_SPECIALS = ("bos_token", "eos_token", "unk_token", "pad_token")
# transformers' clean_up_tokenization: undo the spaces a word-level tokenizer put before punctuation.
_CLEANUP = (
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
)

# Character spans of n tokens: an (n, 2) int64 numpy array of (start, end).
Spans = Any


class Tokenizer:
    """A model's tokenizer: encode/decode, special ids, and the model's chat template.

    Build it with :func:`load_tokenizer`. ``pad_id`` falls back to ``eos_id`` when the model has no
    pad token. ``stop_ids`` holds eos, the generation config's eos ids and the end-of-turn tokens
    (``<|eot_id|>``, ``<|im_end|>``, ``</s>``, ...) the vocabulary has.
    """

    def __init__(
        self,
        backend: _Backend,
        source_dir: Path,
        special_tokens: dict[str, str],
        bos_id: int | None,
        eos_id: int,
        pad_id: int | None,
        extra_stop_ids: Sequence[int],
        clean_up_spaces: bool,
        chat_template: ChatTemplate | None,
        adds_bos: bool = False,
        adds_eos: bool = False,
    ) -> None:
        self._backend = backend
        self.source_dir = source_dir
        self.special_tokens = special_tokens
        self.vocab_size = backend.vocab_size
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.pad_id = pad_id if pad_id is not None else eos_id
        stops = {eos_id, *extra_stop_ids}
        stops.update(i for tok in END_OF_TURN_TOKENS if (i := backend.special_id(tok)) is not None)
        self.stop_ids: frozenset[int] = frozenset(stops)
        self._clean_up_spaces = clean_up_spaces
        self.chat_template = chat_template
        # What transformers' `tokenizer(text)` adds by default (add_bos_token / add_eos_token, else the
        # tokenizer.json post-processor, else LlamaTokenizer's default of bos only).
        self.adds_bos = adds_bos and bos_id is not None
        self.adds_eos = adds_eos

    @cached_property
    def stop_mask(self) -> np.ndarray:
        """Per token id, whether it is in ``stop_ids``: a bool array (``stop_mask[ids]`` marks the stops
        of an id array)."""
        import numpy as np

        mask = np.zeros(max(self.vocab_size, *self.stop_ids) + 1, dtype=bool)
        mask[list(self.stop_ids)] = True
        return mask

    def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Token ids of ``text``; special token strings in it (``<|im_start|>``) become their ids.

        ``encode(text, add_bos=tok.adds_bos, add_eos=tok.adds_eos)`` is transformers' ``tokenizer(text)``.

        Args:
            text: the text to encode.
            add_bos: prepend bos (when the tokenizer has one).
            add_eos: append eos.
        """
        ids = self._backend.encode_ids(text)
        if add_bos and self.bos_id is not None:
            ids = [self.bos_id, *ids]
        if add_eos:
            ids = [*ids, self.eos_id]
        return ids

    def encode_with_offsets(self, text: str) -> tuple[np.ndarray, Spans]:
        """Token ids of ``text`` (an ``(n,)`` int64 array) and each token's ``(start, end)`` character
        span in it, as an ``(n, 2)`` int64 array.

        A SentencePiece byte-fallback character's first pieces have an empty span at the character,
        its last the character's; a dummy-prefix piece has an empty one.

        Args:
            text: the text to encode (no bos/eos are added).
        """
        return self._backend.encode(text)

    def decode(self, ids: Sequence[int], *, skip_special: bool = True) -> str:
        """Text of ``ids``.

        Args:
            ids: token ids.
            skip_special: leave out special tokens (bos, eos, ``<|eot_id|>``, ...).
        """
        text = self._backend.decode([int(i) for i in ids], skip_special=skip_special)
        if self._clean_up_spaces:
            for before, after in _CLEANUP:
                text = text.replace(before, after)
        return text

    def token_to_id(self, token: str) -> int | None:
        """Id of a special or added token string, or None when the vocabulary lacks it."""
        return self._backend.special_id(token)

    def save_pretrained(self, out_dir: Path) -> None:
        """Copy the source tokenizer files (and chat template file) into ``out_dir``.

        Args:
            out_dir: destination directory, created if missing.
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in TOKENIZER_FILES:
            if (self.source_dir / name).is_file():
                shutil.copyfile(self.source_dir / name, out_dir / name)


class _Backend:
    vocab_size: int
    # bos/eos ids the tokenizer file itself declares (SentencePiece does; tokenizer.json does not).
    native_bos: int | None = None
    native_eos: int | None = None

    def default_specials(self) -> tuple[int | None, int | None]:
        """(first, last) ids the file's own post-processing adds around a text, or None each."""
        return None, None

    def encode(self, text: str) -> tuple[np.ndarray, Spans]:
        """Ids (int64) and character spans of ``text`` (no bos/eos): see Tokenizer.encode_with_offsets."""
        raise NotImplementedError

    def encode_ids(self, text: str) -> list[int]:
        """Ids of ``text`` (no bos/eos): ``encode(text)[0]``, without computing the spans."""
        raise NotImplementedError

    def decode(self, ids: list[int], *, skip_special: bool) -> str:
        raise NotImplementedError

    def special_id(self, token: str) -> int | None:
        raise NotImplementedError


class _JsonBackend(_Backend):
    """``tokenizer.json`` through the ``tokenizers`` library (added tokens match inside text)."""

    def __init__(self, path: Path, added_tokens: dict[int, dict[str, Any]]) -> None:
        from tokenizers import AddedToken
        from tokenizers import Tokenizer as HFTokenizer

        self._tk = HFTokenizer.from_file(str(path))
        vocab = self._tk.get_vocab(with_added_tokens=True)
        # tokenizer_config.json may declare added tokens that tokenizer.json lacks (transformers adds them).
        missing = [
            AddedToken(
                t["content"],
                special=t.get("special", True),
                normalized=t.get("normalized", False),
                lstrip=t.get("lstrip", False),
                rstrip=t.get("rstrip", False),
            )
            for t in added_tokens.values()
            if t["content"] not in vocab
        ]
        if missing:
            self._tk.add_special_tokens(missing)
        self.vocab_size = self._tk.get_vocab_size(with_added_tokens=True)
        # Spans from ids (_ByteWidths) for a byte-level BPE whose offsets are the tokens' bytes; else
        # the library's offsets, whose Python list of tuples costs a tenth of the encode.
        self._forms = _byte_level_forms(self._tk)
        self._widths: _ByteWidths | None = None  # made on the first encode with spans

    def encode(self, text: str) -> tuple[np.ndarray, Spans]:
        import numpy as np

        enc = self._tk.encode(text, add_special_tokens=False)
        ids = np.array(enc.ids, dtype=np.int64)
        spans = None
        if self._forms is not None:
            self._widths = self._widths or _ByteWidths(self._tk, self._forms)
            spans = self._widths.spans(ids, text)
        return ids, _spans(enc.offsets) if spans is None else spans

    def encode_ids(self, text: str) -> list[int]:
        return self._tk.encode(text, add_special_tokens=False).ids

    def default_specials(self) -> tuple[int | None, int | None]:
        plain = self._tk.encode("a", add_special_tokens=False).ids
        full = self._tk.encode("a", add_special_tokens=True).ids
        start = full.index(plain[0]) if plain and plain[0] in full else 0
        first = full[0] if start > 0 else None
        last = full[-1] if len(full) > start + len(plain) else None
        return first, last

    def decode(self, ids: list[int], *, skip_special: bool) -> str:
        return self._tk.decode(ids, skip_special_tokens=skip_special)

    def special_id(self, token: str) -> int | None:
        return self._tk.token_to_id(token)


class _SentencePieceBackend(_Backend):
    """``tokenizer.model`` through ``sentencepiece``, with transformers' non-legacy Llama behaviour."""

    def __init__(self, path: Path, specials: dict[str, int], prepend: str = "first") -> None:
        import sentencepiece as spm

        # transformers' Metaspace prepend_scheme: "first" (non-legacy: only the text's start gets the
        # dummy-prefix space), "always" (legacy: every piece of text, also after a special token) or
        # "never" (add_prefix_space false).
        self._prepend = prepend
        self._sp = spm.SentencePieceProcessor(model_file=str(path))
        # A second processor without the dummy-prefix space, for text after a special token or text that
        # already starts with a space (transformers' Metaspace with prepend_scheme="first").
        self._sp_cont = spm.SentencePieceProcessor(
            model_proto=_without_dummy_prefix(self._sp.serialized_model_proto())
        )
        size = self._sp.GetPieceSize()
        control = {
            self._sp.IdToPiece(i): i for i in range(size) if self._sp.IsControl(i) or self._sp.IsUnknown(i)
        }
        self._specials = {**control, **specials}
        self._special_ids = {i: tok for tok, i in self._specials.items()}
        # One alternation, longest first, so "<|im_start|>" wins over any special it contains: the
        # leftmost match, and at one position the longest special, as a scan of each position would find.
        by_length = sorted((tok for tok in self._specials if tok), key=len, reverse=True)
        self._special_re = re.compile("|".join(map(re.escape, by_length))) if by_length else None
        self.vocab_size = max(size, max(self._special_ids, default=-1) + 1)
        self.native_bos = self._sp.bos_id() if self._sp.bos_id() >= 0 else None
        self.native_eos = self._sp.eos_id() if self._sp.eos_id() >= 0 else None
        # Spans from ids (_PieceWidths) where the text is not normalized; else SentencePiece's
        # offsets, which cost 2.4x an ids-only encode.
        self._plain, self._dummy_prefix = _normalizer(self._sp.serialized_model_proto())
        self._widths: _PieceWidths | None = None  # made on the first encode with spans

    def encode(self, text: str) -> tuple[np.ndarray, Spans]:
        import numpy as np

        ids, spans = [], []
        for start, chunk, special in self._split(text):
            if special is not None:
                ids.append(np.array([special], dtype=np.int64))
                spans.append(np.array([[start, start + len(chunk)]], dtype=np.int64))
                continue
            processor = self._processor(start, chunk)
            chunk_ids = processor.encode_as_numpy(chunk).astype(np.int64)
            chunk_spans = None
            if self._plain:
                self._widths = self._widths or _PieceWidths(self._sp, self._dummy_prefix)
                chunk_spans = self._widths.spans(chunk_ids, len(chunk), dummy=processor is self._sp)
            if chunk_spans is None:
                chunk_spans = _spans(processor.encode(chunk, out_type="offset_mapping")["offsets"])
            ids.append(chunk_ids)
            spans.append(chunk_spans + start if start else chunk_spans)
        if not ids:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 2), dtype=np.int64)
        return np.concatenate(ids), np.concatenate(spans)

    def encode_ids(self, text: str) -> list[int]:
        ids: list[int] = []
        for start, chunk, special in self._split(text):
            if special is not None:
                ids.append(special)
            else:
                ids.extend(self._processor(start, chunk).encode(chunk))
        return ids

    def _processor(self, start: int, chunk: str) -> Any:
        """The processor for a plain chunk at ``start``: with the dummy-prefix space (the text's start
        under ``first``, every chunk under ``always``) unless the chunk starts with a space."""
        prefix = self._prepend == "always" or (self._prepend == "first" and start == 0)
        return self._sp if prefix and not chunk.startswith(" ") else self._sp_cont

    def _split(self, text: str) -> list[tuple[int, str, int | None]]:
        """Split ``text`` into (start, chunk, special id or None) around special token strings."""
        if self._special_re is None:
            return [(0, text, None)] if text else []
        pieces: list[tuple[int, str, int | None]] = []
        plain = 0
        for match in self._special_re.finditer(text):
            pos = match.start()
            if plain < pos:
                pieces.append((plain, text[plain:pos], None))
            pieces.append((pos, match.group(), self._specials[match.group()]))
            plain = match.end()
        if plain < len(text):
            pieces.append((plain, text[plain:], None))
        return pieces

    def decode(self, ids: list[int], *, skip_special: bool) -> str:
        parts: list[str] = []
        run: list[int] = []

        def flush() -> None:
            if run:
                # Only the text at the very start loses its dummy-prefix space, as in transformers.
                parts.append((self._sp_cont if parts else self._sp).decode(run))
                run.clear()

        for i in ids:
            if i in self._special_ids:
                flush()
                if not skip_special:
                    parts.append(self._special_ids[i])
            else:
                run.append(i)
        flush()
        return "".join(parts)

    def special_id(self, token: str) -> int | None:
        if token in self._specials:
            return self._specials[token]
        i = self._sp.PieceToId(token)
        return None if i == self._sp.unk_id() and token != self._sp.IdToPiece(i) else i


def _spans(offsets: list[tuple[int, int]]) -> Spans:
    """``offsets`` as an ``(n, 2)`` int64 array (``np.fromiter`` over the flattened pairs is 2.5x faster
    than ``np.asarray`` on a list of tuples)."""
    import numpy as np

    return np.fromiter(chain.from_iterable(offsets), dtype=np.int64, count=2 * len(offsets)).reshape(-1, 2)


class _PieceWidths:
    """Character spans of a SentencePiece encoding computed from its ids, for a model whose normalizer
    leaves the text as it is (:func:`_normalizer`): the same spans as SentencePiece's own offsets
    (``encode(out_type="offset_mapping")``), at the cost of a few numpy operations.

    A piece covers as many characters as it has (``▁`` stands for one space), the dummy-prefix ``▁``
    none. A byte-fallback character's pieces cover nothing but the last, which covers the character
    (SentencePiece's offsets: ``(s, s)`` for the first bytes, ``(s, s + 1)`` for the last). An unknown
    piece's width is not known: :meth:`spans` returns None for the caller to ask SentencePiece.

    Args:
        sp: the processor (its vocabulary).
        dummy_prefix: the model adds a dummy-prefix ``▁`` (``normalizer_spec.add_dummy_prefix``).
    """

    def __init__(self, sp: Any, dummy_prefix: bool) -> None:
        import numpy as np

        size = sp.GetPieceSize()
        self._dummy_prefix = dummy_prefix
        self._width = np.zeros(size, dtype=np.int64)
        self._byte = np.zeros(size, dtype=bool)
        self._continuation = np.zeros(size, dtype=bool)  # a UTF-8 continuation byte, 0x80-0xBF
        self._starts_with_space = np.zeros(size, dtype=bool)
        for i in range(size):
            piece = sp.IdToPiece(i)
            if sp.IsByte(i):
                self._byte[i] = True
                self._continuation[i] = 0x80 <= int(piece[3:5], 16) <= 0xBF
            elif sp.IsUnknown(i) or sp.IsControl(i):
                self._width[i] = -(1 << 40)  # any sum with it fails the check in spans()
            else:
                self._width[i] = len(piece)
                self._starts_with_space[i] = piece.startswith("\u2581")

    def spans(self, ids: np.ndarray, length: int, *, dummy: bool) -> Spans | None:
        """``(n, 2)`` int64 spans of ``ids``, the encoding of a text of ``length`` characters, or None
        when they cannot be told from the ids (an unknown piece; widths that do not add up to
        ``length``).

        Args:
            ids: the text's ids, an ``(n,)`` int64 array.
            length: the text's length in characters.
            dummy: the processor that encoded it adds the dummy prefix.
        """
        import numpy as np

        if not len(ids):
            return np.zeros((0, 2), dtype=np.int64) if length == 0 else None
        width = self._width[ids]
        byte = self._byte[ids]
        if byte.any():
            last_byte = np.ones(len(ids), dtype=bool)
            last_byte[:-1] = ~self._continuation[ids[1:]]
            width[byte] = last_byte[byte]
        if dummy and self._dummy_prefix:
            if not self._starts_with_space[ids[0]]:
                return None
            width[0] -= 1
        ends = np.cumsum(width)
        if ends[-1] != length:
            return None
        return np.stack((ends - width, ends), axis=1)


class _ByteWidths:
    """Character spans of a byte-level BPE encoding (``tokenizer.json`` with a ``ByteLevel``
    pre-tokenizer: Llama 3, Qwen 2/3, GPT-2, Mistral's Tekken) computed from its ids: the same spans as
    the library's offsets, at the cost of a few numpy operations.

    A byte-level vocabulary token stands for as many bytes of the text as it has characters (one per
    byte, GPT-2's byte-to-unicode alphabet), an added token for its content's UTF-8 bytes. The tokens'
    bytes laid end to end are the text's bytes; a token covers, in characters, from the character that
    holds its first byte to the one that holds its last (``tokenizers``' byte-to-character offset
    conversion: a character split between two tokens is in both spans).

    Args:
        tk: the ``tokenizers.Tokenizer``.
        forms: the Unicode normal forms its normalizer applies (:func:`_byte_level_forms`); a text
            not already in them takes the library's offsets.
    """

    def __init__(self, tk: Any, forms: tuple[str, ...]) -> None:
        import numpy as np

        self._forms = forms
        added = {i: token.content for i, token in tk.get_added_tokens_decoder().items()}
        self._width = np.zeros(tk.get_vocab_size(with_added_tokens=True), dtype=np.int64)
        for token, i in tk.get_vocab(with_added_tokens=True).items():
            self._width[i] = len(added[i].encode("utf-8")) if i in added else len(token)

    def spans(self, ids: np.ndarray, text: str) -> Spans | None:
        """``(n, 2)`` int64 character spans of ``ids``, the encoding of ``text``, or None when they
        cannot be told from the ids (the normalizer changes the text; an added token that strips the
        spaces around it: widths that do not add up to the text's bytes).

        Args:
            ids: the text's ids, an ``(n,)`` int64 array.
            text: the text.
        """
        import unicodedata

        import numpy as np

        ascii_text = text.isascii()  # its bytes are its characters, in every normal form
        if not ascii_text and not all(unicodedata.is_normalized(form, text) for form in self._forms):
            return None
        width = self._width[ids]
        ends = np.cumsum(width)
        if ascii_text:
            if (ends[-1] if len(ids) else 0) != len(text):
                return None
            return np.stack((ends - width, ends), axis=1)
        data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        if (ends[-1] if len(ids) else 0) != len(data):
            return None
        char_of_byte = np.cumsum((data & 0xC0) != 0x80) - 1  # a continuation byte is 0b10xxxxxx
        return np.stack((char_of_byte[ends - width], char_of_byte[ends - 1] + 1), axis=1)


def _byte_level_forms(tk: Any) -> tuple[str, ...] | None:
    """The Unicode normal forms (``NFC``...) a ``tokenizer.json`` normalizes to when its offsets are its
    tokens' bytes (:class:`_ByteWidths`), else None.

    That holds for a BPE model with a ``ByteLevel`` pre-tokenizer that adds no prefix space, a normalizer
    that is none or Unicode normal forms only (they leave a text already in them as it is), and no
    ``ByteLevel`` post-processor that trims the spaces off the offsets.
    """

    def state(component: Any) -> dict[str, Any]:
        return {} if component is None else json.loads(component.__getstate__())

    def parts(config: dict[str, Any], key: str) -> list[dict[str, Any]]:
        return [p for c in config.get(key) or [] for p in parts(c, key)] if key in config else [config]

    if type(tk.model).__name__ != "BPE":
        return None
    pre = parts(state(tk.pre_tokenizer), "pretokenizers")
    byte_level = [p for p in pre if p.get("type") == "ByteLevel"]
    if not byte_level or any(p.get("add_prefix_space") for p in byte_level):
        return None
    post = parts(state(tk.post_processor), "processors")
    if any(p.get("type") == "ByteLevel" and p.get("trim_offsets") for p in post):
        return None
    normalizers = [n for n in parts(state(tk.normalizer), "normalizers") if n]
    if any(n.get("type") not in ("NFC", "NFD", "NFKC", "NFKD") for n in normalizers):
        return None
    return tuple(n["type"] for n in normalizers)


def _normalizer(model_proto: bytes) -> tuple[bool, bool]:
    """(the text is left as it is, a dummy-prefix space is added) by a serialized SentencePiece model.

    Left as it is: the ``identity`` normalizer with no character map, no removal of extra whitespace
    and whitespace not treated as a suffix (Llama, Mistral and Gemma's tokenizer.model; the
    ``sentencepiece`` trainer's default ``nmt_nfkc`` with ``remove_extra_whitespaces`` changes text).
    Read at the protobuf wire level (ModelProto: 2 trainer_spec, 3 normalizer_spec; NormalizerSpec: 1
    name, 2 precompiled_charsmap, 3 add_dummy_prefix, 4 remove_extra_whitespaces, defaults true;
    TrainerSpec: 24 treat_whitespace_as_suffix).
    """
    normalizer: dict[int, bytes] = {}
    trainer: dict[int, bytes] = {}
    for number, _, payload, _ in _proto_fields(model_proto):
        if number in (2, 3):
            fields = {n: (p if w == 2 else r) for n, w, p, r in _proto_fields(payload)}
            (trainer if number == 2 else normalizer).update(fields)

    def flag(fields: dict[int, bytes], number: int, default: bool) -> bool:
        if number not in fields:
            return default
        _, pos = _read_varint(fields[number], 0)  # the field's key
        return bool(_read_varint(fields[number], pos)[0])

    plain = (
        normalizer.get(1) == b"identity"
        and not normalizer.get(2)
        and not flag(normalizer, 4, True)
        and not flag(trainer, 24, False)
    )
    return plain, flag(normalizer, 3, True)


def _without_dummy_prefix(model_proto: bytes) -> bytes:
    """The serialized SentencePiece ModelProto with ``normalizer_spec.add_dummy_prefix = false``.

    Edited at the protobuf wire level (ModelProto field 3 is normalizer_spec; its field 3 is the bool
    add_dummy_prefix) so that protobuf is not a runtime dependency.
    """
    out = bytearray()
    for number, wire, payload, raw in _proto_fields(model_proto):
        if number == 3 and wire == 2:
            body = b"".join(r for n, _, _, r in _proto_fields(payload) if n != 3) + bytes([(3 << 3) | 0, 0])
            out += _varint((3 << 3) | 2) + _varint(len(body)) + body
        else:
            out += raw
    return bytes(out)


def _proto_fields(data: bytes) -> list[tuple[int, int, bytes, bytes]]:
    """(field number, wire type, payload, raw bytes incl. key) of each top-level protobuf field."""
    fields = []
    pos = 0
    while pos < len(data):
        start = pos
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _read_varint(data, pos)
            payload = data[start:pos]
        elif wire == 1 or wire == 5:
            pos += 8 if wire == 1 else 4
            payload = data[start:pos]
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            payload = data[pos : pos + length]
            pos += length
        else:
            raise TunewizError(
                f"tokenizer.model has an unsupported protobuf wire type {wire}",
                hint="re-save the tokenizer with `sentencepiece`, or provide a tokenizer.json",
            )
        fields.append((number, wire, payload, data[start:pos]))
    return fields


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TunewizError(
            f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})",
            hint="restore the file from the model's repository",
        ) from exc


def _token_content(value: Any) -> str | None:
    """A special token entry is a string or an AddedToken dict with ``content``."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _first_id(value: Any) -> int | None:
    if isinstance(value, list):
        return value[0] if value else None
    return value if isinstance(value, int) else None


def load_tokenizer(model_dir: Path) -> Tokenizer:
    """Load the tokenizer (and chat template) of a model directory.

    Args:
        model_dir: a directory with ``tokenizer.json`` or ``tokenizer.model`` and, usually,
            ``tokenizer_config.json``.
    """
    model_dir = Path(model_dir)
    config = _read_json(model_dir / "tokenizer_config.json")
    legacy_map = _read_json(model_dir / "special_tokens_map.json")
    gen_config = _read_json(model_dir / "generation_config.json")
    model_config = _read_json(model_dir / "config.json")
    added = {int(k): v for k, v in (config.get("added_tokens_decoder") or {}).items() if isinstance(v, dict)}

    if (model_dir / "tokenizer.json").is_file():
        backend: _Backend = _JsonBackend(model_dir / "tokenizer.json", added)
    elif (model_dir / "tokenizer.model").is_file():
        backend = _SentencePieceBackend(
            model_dir / "tokenizer.model",
            {v["content"]: k for k, v in added.items()},
            prepend=_prepend_scheme(config),
        )
    else:
        raise TunewizError(
            f"{model_dir} has no tokenizer.json or tokenizer.model",
            hint="download the model again with `tunewiz download REPO_ID`, "
            "or copy its tokenizer files there",
        )

    special_tokens: dict[str, str] = {}
    for name in _NAMED_SPECIALS:
        content = _token_content(config.get(name)) or _token_content(legacy_map.get(name))
        if content is not None:
            special_tokens[name] = content

    def resolve(name: str, *id_sources: Any) -> int | None:
        if name in config and config[name] is None and name != "eos_token":
            return None  # declared absent (Qwen2 has no bos), so config.json's id must not fill it in
        if name in special_tokens and (i := backend.special_id(special_tokens[name])) is not None:
            return i
        return next((i for src in id_sources if (i := _first_id(src)) is not None), None)

    bos_id = resolve(
        "bos_token", gen_config.get("bos_token_id"), model_config.get("bos_token_id"), backend.native_bos
    )
    eos_id = resolve(
        "eos_token", gen_config.get("eos_token_id"), model_config.get("eos_token_id"), backend.native_eos
    )
    pad_id = resolve("pad_token", gen_config.get("pad_token_id"), model_config.get("pad_token_id"))
    if eos_id is None:
        raise TunewizError(
            f"{model_dir}: no eos token in tokenizer_config.json, generation_config.json or config.json",
            hint="set `eos_token` in tokenizer_config.json",
        )
    for name, i in (("bos_token", bos_id), ("eos_token", eos_id)):
        if name not in special_tokens and i is not None:
            special_tokens[name] = backend.decode([i], skip_special=False)

    extra_stops = gen_config.get("eos_token_id")
    extra_stops = (
        extra_stops
        if isinstance(extra_stops, list)
        else [extra_stops]
        if isinstance(extra_stops, int)
        else []
    )
    first, last = backend.default_specials()
    if isinstance(backend, _JsonBackend):
        # transformers 5 keeps a tokenizer.json's post-processor (add_bos_token/add_eos_token in
        # tokenizer_config.json do not change it: measured for byte-level files, tests/test_tokenizer.py).
        adds_bos, adds_eos = first is not None and first == bos_id, last is not None and last == eos_id
    else:
        # LlamaTokenizer built from tokenizer.model: the flags, default bos only.
        adds_bos = bool(config.get("add_bos_token", True))
        adds_eos = bool(config.get("add_eos_token", False))
    return Tokenizer(
        backend,
        model_dir,
        special_tokens,
        bos_id,
        eos_id,
        pad_id,
        extra_stops,
        clean_up_spaces=bool(config.get("clean_up_tokenization_spaces", False)),
        chat_template=load_model_template(model_dir, config, special_tokens),
        adds_bos=adds_bos,
        adds_eos=adds_eos,
    )


def _prepend_scheme(config: dict[str, Any]) -> str:
    """transformers' ``_get_prepend_scheme`` for a LlamaTokenizer built from tokenizer.model."""
    if not config.get("add_prefix_space", True):
        return "never"
    return "always" if config.get("legacy", False) else "first"
