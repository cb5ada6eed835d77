"""LoRA adapters in MindSpeed-LLM's Megatron layout: merged into the base, or split for PEFT.

MindSpeed-LLM wraps megatron-core with PEFT, so each targeted linear X of a LoRA
checkpoint is saved as `X.base_layer.weight` (and `.bias`, or TE's `layer_norm_weight`:
everything of the wrapped module moves under `base_layer`), `X.lora_A.default.weight`
[r, in] and `X.lora_B.default.weight` [out, r], with y = W x + (alpha / r) B A x. The
fused `linear_qkv` and `linear_fc1` carry ONE pair (PEFT's own Hugging Face layout has
one per q/k/v and per gate/up). Under tensor parallelism a column-parallel base
(`linear_qkv`, `linear_fc1`) has A replicated and B split by rows like the base; a
row-parallel base (`linear_proj`, `linear_fc2`) has A split by columns like the base
and B replicated. So each TP rank merges on its own: W_r + s B_r A (column) and
W_r + s B A_r (row) are exactly rank r's shard of W + s B A.

Which linears can be targeted, and how their B (column) or A (row) shards gather into
Hugging Face pieces, is the family table (`families.Part`, `sharding.gather_part`):
the fused B of `linear_qkv` is un-interleaved per query group into q/k/v rows exactly
as the base weight is, and each piece gets the shared A (`lora_peft.py`).

Pure functions over state dicts; files are `lora_checkpoint.py`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch

from atelier.core.errors import AtelierError
from atelier.llm.convert.families import Family
from atelier.llm.convert.names import detect_format
from atelier.llm.convert.parts import Part, Split

# X.lora_A.<adapter>.<leaf>: PEFT's names inside a wrapped module.
_ADAPTER = re.compile(r"^(?P<module>.+)\.lora_(?P<which>[AB])\.(?P<adapter>[^.]+)\.(?P<leaf>.+)$")
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
BASE_LAYER = ".base_layer."
# PEFT's modules_to_save: the trained copy replaces the original module.
_SAVED = ".modules_to_save.default."
_ORIGINAL = ".original_module."


@dataclass(frozen=True)
class LoraSpec:
    """Rank, alpha and targeted linears (Megatron module names, e.g. `linear_qkv`)."""

    r: int
    alpha: float
    target_modules: tuple[str, ...] = ()  # empty: whatever the checkpoint holds

    def __post_init__(self) -> None:
        if self.r < 1:
            raise AtelierError(f"lora_r {self.r}: must be at least 1")
        if not math.isfinite(self.alpha) or self.alpha <= 0:
            raise AtelierError(f"lora_alpha {self.alpha}: must be a positive number")

    @property
    def scale(self) -> float:
        return self.alpha / self.r


@dataclass(frozen=True)
class LoraTarget:
    """One linear LoRA can wrap, in one checkpoint format."""

    name: str  # Megatron mcore module name: linear_qkv, linear_proj, linear_fc1, linear_fc2
    part: Part
    module: str  # the wrapped module's name template in this format (`{i}` = local layer)

    @property
    def hf_modules(self) -> tuple[str, ...]:
        """PEFT target names, one per Hugging Face piece (q_proj, k_proj, v_proj ...)."""
        return tuple(module_of(t).rsplit(".", 1)[-1] for t in self.part.hf)


def module_of(weight_name: str) -> str:
    return weight_name.removesuffix(".weight")


def lora_targets(fam: Family, fmt: str = "mcore", norms: str = "local") -> dict[str, LoraTarget]:
    """The family's layer linears (weights that TP shards), keyed by mcore module name.

    Legacy spellings (`query_key_value`, `dense`, `dense_h_to_4h`, `dense_4h_to_h`) are
    accepted as aliases by `resolve_targets`; `module` is the name in `fmt`.
    """
    out: dict[str, LoraTarget] = {}
    for part in fam.layer_parts:
        if part.split in (Split.REPLICATED, Split.VOCAB) or not part.mcore.endswith(".weight"):
            continue
        here = part.name(fmt, norms)
        if here is None:
            continue
        name = module_of(part.mcore).rsplit(".", 1)[-1]
        out[name] = LoraTarget(name, part, module_of(here))
    return out


def resolve_targets(
    fam: Family, fmt: str, norms: str, wanted: Sequence[str]
) -> dict[str, LoraTarget]:
    """`wanted` (mcore or legacy module names) -> targets; an unknown name is an error."""
    targets = lora_targets(fam, fmt, norms)
    aliases = {t.name: t for t in targets.values()}
    for t in targets.values():
        if t.part.legacy:
            aliases[module_of(t.part.legacy).rsplit(".", 1)[-1]] = t
    out: dict[str, LoraTarget] = {}
    for w in wanted:
        if w not in aliases:
            raise AtelierError(
                f"lora_target_modules {w!r}: not a linear Atelier can target in {fam.name}; "
                f"choose from {' '.join(targets)}"
            )
        out[aliases[w].name] = aliases[w]
    return out


@dataclass
class Adapters:
    """One rank's LoRA matrices, by wrapped module name."""

    a: dict[str, torch.Tensor]
    b: dict[str, torch.Tensor]

    def __bool__(self) -> bool:
        return bool(self.a or self.b)

    def modules(self) -> list[str]:
        return sorted(set(self.a) | set(self.b))


def split_lora_state(
    flat: Mapping[str, torch.Tensor], where: str
) -> tuple[dict[str, torch.Tensor], Adapters]:
    """(base tensors under their plain names, adapters) of one rank's flat state dict.

    `X.base_layer.Y` becomes `X.Y`; PEFT's `modules_to_save.default` copy replaces the
    original module; TE `_extra_state` of adapters is dropped. A name present both with
    and without `base_layer` is refused (two different bases).
    """
    base: dict[str, torch.Tensor] = {}
    adapters = Adapters({}, {})
    saved: dict[str, torch.Tensor] = {}
    for name, t in flat.items():
        m = _ADAPTER.match(name)
        if m:
            if m["leaf"].endswith("_extra_state"):
                continue
            if m["leaf"] != "weight" or m["adapter"] != "default":
                raise AtelierError(
                    f"{where}: {name!r} is not a LoRA tensor Atelier reads (only "
                    "X.lora_A.default.weight and X.lora_B.default.weight)"
                )
            (adapters.a if m["which"] == "A" else adapters.b)[m["module"]] = t
            continue
        if _SAVED in name:
            saved[name.replace(_SAVED, ".", 1)] = t
            continue
        plain = name.replace(BASE_LAYER, ".", 1)
        plain = plain.replace(_ORIGINAL, ".", 1)
        if plain in base:
            raise AtelierError(
                f"{where}: holds both {plain!r} and a base_layer / original_module copy of it"
            )
        base[plain] = t
    for name, t in saved.items():
        if name not in base:
            raise AtelierError(f"{where}: modules_to_save copy of {name!r} has no original")
        base[name] = t
    return base, adapters


def trained_copies(flat: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensors of a LoRA save that are neither adapters nor a wrapped base: in a save of
    adapters only (`--lora-ckpt-filter`), the modules trained fully (modules_to_save)."""
    return {
        n.replace(_SAVED, ".", 1): t
        for n, t in flat.items()
        if not _ADAPTER.match(n)
        and BASE_LAYER not in n
        and _ORIGINAL not in n
        and not n.endswith("_extra_state")
    }


def exportable_adapters(
    flat: Mapping[str, torch.Tensor], where: str, modules_to_save: Sequence[str] = ()
) -> Adapters:
    """The adapters of a rank to carry over on their own (PEFT export, an HF base).

    Modules trained fully (`modules_to_save` from the run's args, PEFT's
    `modules_to_save.default` copies, or any other tensor in an adapters-only save) would
    be lost that way, so they are refused: merge onto the Megatron base instead.
    """
    filtered = not any(BASE_LAYER in n for n in flat)
    saved = next((n for n in flat if _SAVED in n), None) or next(
        (n for n in trained_copies(flat) if filtered), None
    )
    if saved is not None or modules_to_save:
        what = repr(saved) if saved else f"lora_modules_to_save {' '.join(modules_to_save)}"
        raise AtelierError(
            f"{where}: {what} is a module trained fully (modules_to_save), which is merged "
            "only onto a Megatron base; pass the Megatron base checkpoint as load_dir (and "
            "drop save_lora_to_hf)"
        )
    return split_lora_state(flat, where)[1]


def check_adapters(
    adapters: Adapters,
    base: Mapping[str, torch.Tensor] | None,
    spec: LoraSpec,
    targets: Mapping[str, LoraTarget],
    num_layers: int,
    where: str,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Weight name -> (A, B) for every targeted linear of every local layer, all checked.

    `targets` are the wanted ones; adapters on anything else, a missing A or B, a rank
    other than `spec.r` or shapes that do not fit the base weight (when `base` is given)
    are errors (a merge that quietly skipped one would lose training).
    """
    expected = {t.module.format(i=j): t for t in targets.values() for j in range(num_layers)}
    for module in adapters.modules():
        if module not in expected:
            raise AtelierError(
                f"{where}: a LoRA adapter on {module!r}, which lora_target_modules "
                f"({' '.join(targets) or 'none'}) does not name; add it to "
                "lora_target_modules, or pass the run's own list"
            )
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for module, target in expected.items():
        a, b = adapters.a.get(module), adapters.b.get(module)
        if a is None or b is None:
            which = "lora_A" if a is None else "lora_B"
            raise AtelierError(
                f"{where}: no {module}.{which}.default.weight, but lora_target_modules names "
                f"{target.name}; pass the run's lora_target_modules (or the right lora_load)"
            )
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != spec.r or b.shape[1] != spec.r:
            got = a.shape[0] if a.dim() == 2 else list(a.shape)
            raise AtelierError(
                f"{where}: {module}.lora_A.default.weight is {list(a.shape)} and lora_B "
                f"{list(b.shape)}, i.e. rank {got}, but lora_r is {spec.r}; pass the run's "
                f"lora_r ({got})"
            )
        weight = module + ".weight"
        out[weight] = (a, b)
        if base is None:
            continue
        w = base.get(weight)
        if w is None:
            raise AtelierError(f"{where}: LoRA adapters on {module!r} but no base {weight!r}")
        if (b.shape[0], a.shape[1]) != tuple(w.shape):
            raise AtelierError(
                f"{where}: {module} adapters give a [{b.shape[0]}, {a.shape[1]}] update but "
                f"the base weight is {list(w.shape)}; the LoRA checkpoint is not of this "
                "base model (or of another tensor parallel size)"
            )
    return out


def merge_weight(w: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """W + scale * B A, summed in fp32 and rounded once to W's dtype."""
    return torch.addmm(w.float(), b.float(), a.float(), alpha=scale).to(w.dtype)


class MergedRankState(Mapping[str, torch.Tensor]):
    """One rank's state dict with the adapters merged, each weight when it is read.

    Lazy so that a reader holding one layer at a time (mg2hf) merges one layer at a time.
    """

    def __init__(
        self,
        base: dict[str, torch.Tensor],
        pairs: dict[str, tuple[torch.Tensor, torch.Tensor]],
        scale: float,
    ) -> None:
        self._base, self._pairs, self._scale = base, pairs, scale

    def __getitem__(self, name: str) -> torch.Tensor:
        w = self._base[name]
        pair = self._pairs.get(name)
        return w if pair is None else merge_weight(w, pair[0], pair[1], self._scale)

    def __iter__(self) -> Iterator[str]:
        return iter(self._base)

    def __len__(self) -> int:
        return len(self._base)

    def __contains__(self, name: object) -> bool:
        return name in self._base


def count_local_layers(names: Sequence[str] | set[str]) -> int:
    idx = {int(m.group(1)) for n in names if (m := _LAYER.search(n))}
    return max(idx) + 1 if idx else 0


def merged_rank(
    flat: Mapping[str, torch.Tensor],
    spec: LoraSpec,
    fam: Family,
    where: str,
    adapters_from: Mapping[str, torch.Tensor] | None = None,
    adapters_where: str = "",
) -> MergedRankState:
    """One TP rank (of one stage) with W + (alpha / r) B A for every targeted linear.

    `flat` holds the base (plain or `base_layer` names) and, unless `adapters_from` is
    given (a LoRA checkpoint saved apart, e.g. with `--lora-ckpt-filter`), the adapters;
    the other tensors of `adapters_from` (modules trained fully) replace the base's.
    Without `spec.target_modules`, the linears the adapters sit on are the targets.
    """
    base, own = split_lora_state(flat, where)
    adapters, awhere = own, where
    if adapters_from is not None:
        if own:
            raise AtelierError(
                f"{where}: the base checkpoint holds LoRA adapters itself "
                f"(e.g. {own.modules()[0]}.lora_A.default.weight) and lora_load gives others; "
                "pass only one of them"
            )
        _, adapters = split_lora_state(adapters_from, adapters_where)
        awhere = adapters_where
        for name, t in trained_copies(adapters_from).items():  # modules_to_save
            if name not in base or base[name].shape != t.shape:
                raise AtelierError(
                    f"{awhere}: {name!r} {list(t.shape)} has no counterpart in the base "
                    f"{where}; pass the base checkpoint the LoRA run was trained on"
                )
            base[name] = t
    fmt, norms = detect_format(base)
    targets = targets_for(fam, fmt, norms, spec, adapters, awhere)
    pairs = check_adapters(adapters, base, spec, targets, count_local_layers(set(base)), awhere)
    return MergedRankState(base, pairs, spec.scale)


def targets_for(
    fam: Family, fmt: str, norms: str, spec: LoraSpec, adapters: Adapters, where: str
) -> dict[str, LoraTarget]:
    if spec.target_modules:
        return resolve_targets(fam, fmt, norms, spec.target_modules)
    every = lora_targets(fam, fmt, norms)
    held = {
        name
        for name, t in every.items()
        for m in adapters.modules()
        if (mm := _LAYER.search(m)) and m == t.module.format(i=int(mm.group(1)))
    }
    if not held and adapters:
        raise AtelierError(
            f"{where}: LoRA adapters on {adapters.modules()[0]!r}, which is not one of "
            f"{' '.join(every)}"
        )
    return {n: every[n] for n in every if n in held}
